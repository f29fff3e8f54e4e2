"""Event types and the edge detectors that raise them from samples.

``Events.emit(type, **fields)`` writes ``{"hub_id", "seq", "ts", "type", ...fields}`` to
the outbox (events have their own ``seq``); unknown types are refused so the centre only
ever sees the names below. Events are never thinned by the outbox budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from hub_agent.telemetry.outbox import Outbox

EventType = Literal[
    "device_authorised",
    "device_deauthorised",
    "device_throttled",
    "quota_reached",
    "voucher_redeemed",
    "config_applied",
    "config_rejected",
    "cache_sync_done",
    "cache_sync_failed",
    "cache_item_evicted",
    "cache_item_removed",
    "agent_start",
    "agent_stop",
    "disk_nearly_full",
    "uplink_lost",
    "uplink_back",
]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))
_RESERVED = {"hub_id", "seq", "ts", "type"}


class Events:
    def __init__(self, outbox: Outbox, on_put: Callable[[], None] = lambda: None) -> None:
        self.outbox = outbox
        self.on_put = on_put

    def emit(self, type: EventType | str, **fields: Any) -> int:
        """Queue an event; return its seq. Raises ValueError on an unknown type/field."""
        if type not in EVENT_TYPES:
            raise ValueError(f"type: unknown event type {type!r}")
        clash = _RESERVED & set(fields)
        if clash:
            raise ValueError(f"fields: {sorted(clash)} are set by the outbox")
        seq = self.outbox.put("event", {"type": type, **fields})
        self.on_put()
        return seq


# -- edge detectors (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class UplinkState:
    up: bool = True
    failures: int = 0


def uplink_step(
    state: UplinkState, probe_ok: bool, lost_after: int = 3
) -> tuple[UplinkState, EventType | None]:
    """Debounced uplink: lost after ``lost_after`` failed probes in a row, back at once."""
    if probe_ok:
        return UplinkState(True, 0), (None if state.up else "uplink_back")
    failures = state.failures + 1
    if state.up and failures >= lost_after:
        return UplinkState(False, failures), "uplink_lost"
    return UplinkState(state.up, failures), None


def disk_step(
    nearly_full: bool, used_pct: float, high: float = 90.0, low: float = 85.0
) -> tuple[bool, EventType | None]:
    """``disk_nearly_full`` once when use crosses ``high``; re-armed below ``low``."""
    if not nearly_full and used_pct >= high:
        return True, "disk_nearly_full"
    if nearly_full and used_pct < low:
        return False, None
    return nearly_full, None
