"""Pure quota verdicts: given a session's limits and usage at ``now``, go on, throttle or end.

Severity only grows (ok < throttle < end) as usage grows and time advances with no new
activity, so a device that is out of data or time stays out; the service persists the
verdict, and a throttled or ended session is never promoted back by a later pass.
The free tier counts bytes per local day: ``bytes_used`` is then today's free usage, and
``local_day`` decides when "today" changes (midnight in the hub's timezone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from hub_agent.config import FreeTier, Plan
from hub_agent.sessions.states import QuotaReason

MB = 1_000_000

VerdictKind = Literal["ok", "throttle", "end"]
_SEVERITY = {"ok": 0, "throttle": 1, "end": 2}


@dataclass(frozen=True)
class Limits:
    quota_bytes: int | None  # None: unlimited
    time_quota_s: int | None  # validity from first use; None: unlimited
    idle_timeout_s: int
    throttle_on_data: bool = False  # plan.on_exhaustion == "throttle"


@dataclass(frozen=True)
class Usage:
    bytes_used: int  # counted bytes charged against quota_bytes
    first_use: float  # when the voucher (or free day) was first used: the time clock
    last_activity: float  # last time the device sent anything, counted or not (or the login)
    kernel_exhausted: bool = False  # the kernel's quota object tripped


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: QuotaReason | None = None

    @property
    def severity(self) -> int:
        return _SEVERITY[self.kind]


OK = Verdict("ok")


def plan_limits(plan: Plan) -> Limits:
    return Limits(
        quota_bytes=None if plan.data_quota_mb is None else plan.data_quota_mb * MB,
        time_quota_s=None if plan.time_quota_min is None else plan.time_quota_min * 60,
        idle_timeout_s=plan.idle_timeout_min * 60,
        throttle_on_data=plan.on_exhaustion == "throttle",
    )


def free_limits(free: FreeTier) -> Limits:
    return Limits(
        quota_bytes=free.daily_mb * MB, time_quota_s=None, idle_timeout_s=free.idle_timeout_min * 60
    )


def data_exhausted(limits: Limits, usage: Usage) -> bool:
    if limits.quota_bytes is None:
        return False
    return usage.kernel_exhausted or usage.bytes_used >= limits.quota_bytes


def time_exhausted(limits: Limits, usage: Usage, now: float) -> bool:
    return limits.time_quota_s is not None and now >= usage.first_use + limits.time_quota_s


def verdict(limits: Limits, usage: Usage, now: float) -> Verdict:
    if time_exhausted(limits, usage, now):
        return Verdict("end", "time_quota")
    if data_exhausted(limits, usage) and not limits.throttle_on_data:
        return Verdict("end", "data_quota")
    # A throttled device still times out when idle, so idle is checked before throttle.
    if now - usage.last_activity >= limits.idle_timeout_s:
        return Verdict("end", "idle")
    if data_exhausted(limits, usage):
        return Verdict("throttle")
    return OK


def worst(a: Verdict, b: Verdict) -> Verdict:
    """The more severe verdict (the persisted state wins ties, so reasons stay stable)."""
    return b if b.severity > a.severity else a


def bytes_remaining(limits: Limits, bytes_used: int) -> int | None:
    if limits.quota_bytes is None:
        return None
    return max(0, limits.quota_bytes - bytes_used)


def seconds_remaining(limits: Limits, first_use: float, now: float) -> int | None:
    if limits.time_quota_s is None:
        return None
    return max(0, int(first_use + limits.time_quota_s - now))


def local_day(ts: float, tz: str = "Africa/Lome") -> str:
    """The calendar day (YYYY-MM-DD) at ``ts`` in the hub's timezone."""
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).date().isoformat()


def next_midnight(ts: float, tz: str = "Africa/Lome") -> float:
    zone = ZoneInfo(tz)
    day = datetime.fromtimestamp(ts, zone).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
