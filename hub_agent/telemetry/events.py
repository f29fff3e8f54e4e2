"""Event types and the edge detectors that raise them from samples.

``Events.emit(type, **fields)`` writes ``{"hub_id", "seq", "ts", "type", ...fields}`` to
the outbox (events have their own ``seq``); unknown types are refused so the centre only
ever sees the names below. Events are never thinned by the outbox budget.

Privacy: this is the one place events leave the hub, so device MAC addresses stop here.
A ``mac`` field becomes ``device`` (``device_pseudonym(key, mac)``, the keyed hash the
voucher redemptions use), and any other MAC-shaped string in the fields is replaced by
its pseudonym too. The key is the deployment's voucher secret when the hub has one (the
centre can then count a device across hubs, never learn its address), else a random key
of this process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from hub_agent.sessions.service import device_pseudonym
from hub_agent.telemetry.outbox import Outbox

EventType = Literal[
    "device_authorised",
    "device_deauthorised",
    "device_throttled",
    "quota_reached",
    "voucher_redeemed",
    "code_usage",  # a central code's cumulative usage on this hub (roaming balances)
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
# 6 octets with ':' or '-' (02:42:0a:.. , 02-42-..), or Cisco's 0242.0a2a.0001
MAC_RE = re.compile(
    r"(?i)(?<![0-9a-f])(?:[0-9a-f]{2}(?:([:-])[0-9a-f]{2})(?:\1[0-9a-f]{2}){4}"
    r"|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})(?![0-9a-f])"
)


def canonical_mac(text: str) -> str:
    """``02-42-0A-2A-00-01``, ``0242.0a2a.0001`` -> ``02:42:0a:2a:00:01`` (as stored)."""
    digits = re.sub(r"[^0-9a-f]", "", text.lower())
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def scrub_macs(value: Any, pseudonym: Callable[[str], str]) -> Any:
    """``value`` with every ``mac`` key renamed ``device`` and every MAC-shaped string
    replaced by its pseudonym, at any depth (pure)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "mac" and isinstance(v, str):
                out["device"] = pseudonym(canonical_mac(v)) if MAC_RE.fullmatch(v) else pseudonym(v)
            else:
                out[k] = scrub_macs(v, pseudonym)
        return out
    if isinstance(value, list | tuple):
        return [scrub_macs(v, pseudonym) for v in value]
    if isinstance(value, str):
        return MAC_RE.sub(lambda m: pseudonym(canonical_mac(m.group(0))), value)
    return value


class Events:
    def __init__(
        self,
        outbox: Outbox,
        on_put: Callable[[], None] = lambda: None,
        key: Callable[[], bytes | None] = lambda: None,
    ) -> None:
        """``key``: the pseudonym key (the deployment's voucher secret), read at each
        event so a pushed secret takes effect; None: this process's random key."""
        self.outbox = outbox
        self.on_put = on_put
        self.key = key
        self._fallback_key = os.urandom(32)

    def pseudonym(self, mac: str) -> str:
        return device_pseudonym(self.key() or self._fallback_key, mac)

    def emit(self, type: EventType | str, **fields: Any) -> int:
        """Queue an event; return its seq. Raises ValueError on an unknown type/field."""
        if type not in EVENT_TYPES:
            raise ValueError(f"type: unknown event type {type!r}")
        clash = _RESERVED & set(fields)
        if clash:
            raise ValueError(f"fields: {sorted(clash)} are set by the outbox")
        seq = self.outbox.put("event", {"type": type, **scrub_macs(fields, self.pseudonym)})
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
