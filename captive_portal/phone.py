"""What every phone page adds: the hub's contact, the clock time a pass ends, the
low-balance warning (10% of the data or the time left) and whether "prolonger" (buy more)
is offered. Pure; no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from captive_portal.i18n import Translator
from hub_agent.api.protocol import SessionView
from hub_agent.config import HubConfig
from hub_agent.purchases import plan_price
from hub_agent.sessions.states import AUTHORISED, LIVE

LOW_FRACTION = 0.10


def contact_context(config: HubConfig, t: Translator) -> dict[str, str] | None:
    """The hub's contact for the footer of every page (None when the config has none)."""
    c = config.hub.contact
    if c is None:
        return None
    # (render.localised's rule, not imported: render imports this module)
    default = config.portal.default_language
    hours = c.hours.get(t.lang) or c.hours.get(default) or next(iter(c.hours.values()), "")
    return {
        "name": c.name,
        "phone": c.phone,
        "tel": "tel:" + "".join(ch for ch in c.phone if ch.isdigit() or ch == "+"),
        "hours": hours,
    }


def pass_end(seconds_remaining: int | None, now: float, tz: str, t: Translator) -> str | None:
    """The clock time the pass ends in the hub's zone: "à 16:45", "demain à 09:10",
    "le 15/03 à 09:10"; None when the pass has no time limit."""
    if seconds_remaining is None:
        return None
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now, zone).date()
    end = datetime.fromtimestamp(now + seconds_remaining, zone)
    hm = end.strftime("%H:%M")
    if end.date() == today:
        return t("status.ends_today", time=hm)
    if end.date() == today + timedelta(days=1):
        return t("status.ends_tomorrow", time=hm)
    return t("status.ends_on", date=f"{end.day:02d}/{end.month:02d}", time=hm)


def _totals(s: SessionView, config: HubConfig) -> tuple[int | None, int | None]:
    """(data quota in bytes, time quota in seconds) of the session's plan."""
    if s.plan_id == "free":
        return config.free_tier.daily_mb * 1_000_000, None
    try:
        p = config.plan(s.plan_id)
    except KeyError:
        return None, None
    data = p.data_quota_mb * 1_000_000 if p.data_quota_mb else None
    return data, p.time_quota_min * 60 if p.time_quota_min else None


def low_balance(s: SessionView, config: HubConfig) -> str | None:
    """ "data" or "time" when 10% or less of it is left (the one nearer its end), else None."""
    if s.state != AUTHORISED:
        return None  # throttled or ended pages say so already
    data, secs = _totals(s, config)
    left: list[tuple[float, str]] = []
    if data and s.bytes_remaining is not None:
        left.append((s.bytes_remaining / data, "data"))
    if secs and s.seconds_remaining is not None:
        left.append((s.seconds_remaining / secs, "time"))
    low = min(left, default=None)
    return low[1] if low is not None and low[0] <= LOW_FRACTION else None


def can_extend(config: HubConfig, session: SessionView | None, pay_online: bool | None) -> bool:
    """Whether the device may buy more now: the status page's "prolonger" and RFC 8908's
    ``can-extend-session`` both come from here. It needs a session that lets the device
    through (a throttled one too: buying more is the way out), mobile money working now
    (the agent's word) and a plan with a price."""
    return (
        session is not None
        and session.state in LIVE
        and bool(pay_online)
        and any(plan_price(p) is not None for p in config.plans)
    )


def status_extras(s: SessionView, config: HubConfig, t: Translator, now: float) -> dict[str, Any]:
    low = low_balance(s, config)
    return {
        "ends": pass_end(s.seconds_remaining, now, config.hub.timezone, t),
        "low": t(f"status.low_{low}") if low else None,
    }
