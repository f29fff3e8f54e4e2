"""Pure mapping of an Access-Accept's attributes to the parameters of a hub session.

What operators' AAA servers send varies (CoovaChilli, OpenWISP, WISPr hotspots), so the
usual attributes are all read; a hub plan named in Filter-Id or Class gives the base and
explicit attributes override it; the radius section's defaults fill what is left.

Units: WISPr-Bandwidth-Max-* are bit/s, ChilliSpot-Bandwidth-Max-* kbit/s, the session's
rates kbit/s. "Up" is from the device (Acct-Input in RFC 2866 terms), "down" towards it.
A zero means "no limit" in every hotspot convention, so it is treated as absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hub_agent.config import Plan, RadiusSettings

MAX_KBIT = 1_000_000  # the plan schema's ceiling
MIN_INTERIM_S = 60  # RFC 2869 5.16: an interval below 60 s should not be used

# Attributes a reply may carry: a value list per name (pyrad's decoded packet shape).
Attrs = Mapping[str, Sequence[object]]


@dataclass(frozen=True)
class SessionParams:
    """What the session service enforces for a RADIUS account (kernel quota and shaping)."""

    down_kbit: int
    up_kbit: int
    quota_bytes: int | None  # counted bytes for the whole session; None: unlimited
    time_limit_s: int | None  # session length from login; None: unlimited
    idle_timeout_s: int
    interim_interval_s: int  # Acct-Interim-Interval, or the config's
    plan_id: str | None = None  # the hub plan named in Filter-Id/Class, if any


@dataclass(frozen=True)
class Defaults:
    down_kbit: int
    up_kbit: int
    idle_timeout_s: int
    interim_interval_s: int

    @classmethod
    def from_settings(cls, s: RadiusSettings) -> Defaults:
        return cls(s.down_kbit, s.up_kbit, s.idle_timeout_min * 60, s.interim_interval_s)


def _int(attrs: Attrs, name: str) -> int | None:
    """The first value as a positive int; None when absent, zero or not a number."""
    for v in attrs.get(name, ()):
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
        return None
    return None


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def named_plan(attrs: Attrs, plans: Sequence[Plan]) -> Plan | None:
    """A hub plan named by Filter-Id (its id) or Class (``id`` or ``plan=id``)."""
    by_id = {p.id: p for p in plans}
    for v in attrs.get("Filter-Id", ()):
        if _text(v).strip() in by_id:
            return by_id[_text(v).strip()]
    for v in attrs.get("Class", ()):
        name = _text(v).strip()
        name = name.removeprefix("plan=")
        if name in by_id:
            return by_id[name]
    return None


def _kbit(bps: int | None) -> int | None:
    return None if bps is None else max(1, bps // 1000)


def _clamp(kbit: int) -> int:
    return max(1, min(kbit, MAX_KBIT))


@dataclass(frozen=True)
class Change:
    """What a CoA-Request asks to change; None: unchanged."""

    down_kbit: int | None = None
    up_kbit: int | None = None
    quota_bytes: int | None = None
    time_limit_s: int | None = None
    idle_timeout_s: int | None = None
    plan_id: str | None = None

    def empty(self) -> bool:
        return all(v is None for v in vars(self).values())


def change_from(attrs: Attrs, plans: Sequence[Plan]) -> Change:
    """The session changes a CoA-Request carries (same attributes as an Accept)."""
    plan = named_plan(attrs, plans)
    down = _kbit(_int(attrs, "WISPr-Bandwidth-Max-Down")) or _int(
        attrs, "ChilliSpot-Bandwidth-Max-Down"
    )
    up = _kbit(_int(attrs, "WISPr-Bandwidth-Max-Up")) or _int(attrs, "ChilliSpot-Bandwidth-Max-Up")
    # a 32-bit attribute: ChilliSpot-Max-Total-Gigawords (CoovaChilli) is not in the
    # FreeRADIUS dictionary we ship, so quotas above 4 GiB come from a named plan
    quota = _int(attrs, "ChilliSpot-Max-Total-Octets")
    session_timeout = _int(attrs, "Session-Timeout")
    idle = _int(attrs, "Idle-Timeout")
    if plan is not None:  # explicit attributes win over the plan they name
        down = down or plan.down_kbit
        up = up or plan.up_kbit
        if quota is None and plan.data_quota_mb is not None:
            quota = plan.data_quota_mb * 1_000_000
        if session_timeout is None and plan.time_quota_min is not None:
            session_timeout = plan.time_quota_min * 60
        idle = idle or plan.idle_timeout_min * 60
    return Change(
        down_kbit=None if down is None else _clamp(down),
        up_kbit=None if up is None else _clamp(up),
        quota_bytes=quota,
        time_limit_s=session_timeout,
        idle_timeout_s=idle,
        plan_id=None if plan is None else plan.id,
    )


def session_params(attrs: Attrs, plans: Sequence[Plan], defaults: Defaults) -> SessionParams:
    """The session an Access-Accept describes: its attributes, its plan, then defaults."""
    c = change_from(attrs, plans)
    interim = _int(attrs, "Acct-Interim-Interval") or defaults.interim_interval_s
    return SessionParams(
        down_kbit=c.down_kbit or defaults.down_kbit,
        up_kbit=c.up_kbit or defaults.up_kbit,
        quota_bytes=c.quota_bytes,
        time_limit_s=c.time_limit_s,
        idle_timeout_s=c.idle_timeout_s or defaults.idle_timeout_s,
        interim_interval_s=max(MIN_INTERIM_S, interim),
        plan_id=c.plan_id,
    )
