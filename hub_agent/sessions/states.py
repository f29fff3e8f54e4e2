"""A device's session as a state machine held as data: states, end reasons, transitions.

Every change of ``sessions.state`` goes through ``step``; the portal (through
``api/protocol.py``) sees ``shown``'s reading of it. Every login method (voucher, free,
account through RADIUS, mobile money and roaming codes, which log in as vouchers) enters
the same way: ``unknown`` (no live session) or ``ended`` (a slot resumed) to a live state.

    unknown --login--> authorised --its data is gone, the plan throttles--> throttled
                           |                                                    |
                           +-------------- end(reason) --> ended <--------------+
    ended --the device resumes its slot--> authorised (throttled if its data is gone)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, cast, get_args

State = Literal["unknown", "authorised", "throttled", "ended"]
UNKNOWN: Final = "unknown"  # no session row yet: never stored (the table's CHECK says so)
AUTHORISED: Final = "authorised"  # through at full rate
THROTTLED: Final = "throttled"  # through at the plan's reduced rate (its data is gone)
ENDED: Final = "ended"  # kept for the status page and a resumed slot
LIVE: Final = frozenset({"authorised", "throttled"})  # rows with these use the uplink

# Allowed transitions: from -> the states it may go to. A throttled session never goes
# back to full rate while it lives: only a new login (after it ended) does.
TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    "unknown": frozenset({"authorised"}),
    "authorised": frozenset({"throttled", "ended"}),
    "throttled": frozenset({"ended"}),
    "ended": frozenset({"authorised", "throttled"}),
}

# Why a session ended. QuotaReason: what the accounting pass decides (sessions/quota.py).
QuotaReason = Literal["data_quota", "time_quota", "idle"]
EndReason = Literal[QuotaReason, "logout", "caretaker", "blocked", "disconnect"]
END_REASONS: Final = frozenset(get_args(EndReason))
QUOTA_REASONS: Final = frozenset(get_args(QuotaReason))

# What the portal is told (the local API, api/protocol.py). "disconnect" (the AAA server's
# Disconnect-Request) is not told: the protocol predates it, the page says "ended".
Shown = Literal["authorised", "throttled", "expired", "ended"]
ShownReason = Literal[QuotaReason, "logout", "caretaker", "blocked"]
SHOWN_REASONS: Final = frozenset(get_args(ShownReason))
EXPIRED_BY: Final = frozenset({"data_quota", "time_quota"})  # ended by its quota: "expired"


class IllegalTransition(ValueError):
    """A change of session state the table does not allow (a bug in the caller)."""


def step(current: str, target: State, reason: str | None = None) -> State:
    """``target`` if ``current -> target`` is allowed, else IllegalTransition. An end
    takes one of ``END_REASONS``; any other transition takes no reason."""
    allowed = TRANSITIONS.get(cast(State, current))
    if allowed is None:
        raise IllegalTransition(f"session state {current!r}: not a state")
    if target not in allowed:
        names = ", ".join(sorted(allowed))
        raise IllegalTransition(f"session {current} -> {target}: not allowed (only {names})")
    if target == "ended" and reason not in END_REASONS:
        raise IllegalTransition(f"session {current} -> ended: unknown end reason {reason!r}")
    if target != "ended" and reason is not None:
        raise IllegalTransition(f"session {current} -> {target}: takes no reason ({reason!r})")
    return target


def shown(state: str, reason: str | None) -> tuple[Shown, ShownReason | None]:
    """A stored session as the portal reads it: its state and, once ended, why (when the
    protocol has a word for it)."""
    if state in LIVE:
        return cast(Shown, state), None
    if state != "ended":
        raise IllegalTransition(f"session state {state!r}: not a stored state")
    told = cast(ShownReason, reason) if reason in SHOWN_REASONS else None
    return ("expired" if reason in EXPIRED_BY else "ended"), told
