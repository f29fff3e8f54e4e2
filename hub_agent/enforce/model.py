"""Plain data that the session layer hands to enforcement, and what enforcement reads back.

The session layer (hub_agent/sessions) decides who is authorised, at what rate and with how
many bytes left; enforcement turns that into kernel state and reports per-device counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Grant:
    """One authorised device as the kernel must see it."""

    mac: str  # normalised lower-case colon form (hub_agent.config.normalise_mac)
    ip: str | None  # IPv4 on the LAN, when known
    down_kbit: int
    up_kbit: int
    # Bytes the device may still use (counted traffic, zero-rated excluded), enforced in the
    # kernel so the cut-off is exact; None: unlimited.
    quota_bytes: int | None = None
    ip6: tuple[str, ...] = ()
    staff: bool = False  # staff devices go to the institution's reserved class
    timeout_s: int | None = None  # kernel-side expiry (session end), None: no timeout


@dataclass(frozen=True)
class DesiredState:
    grants: tuple[Grant, ...] = ()
    blocked_macs: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Counters:
    """Counted (non-zero-rated) bytes since the device's kernel state was created."""

    mac: str
    up_bytes: int
    down_bytes: int
    quota_exhausted: bool = False
    # the device sent anything since the previous read, counted or not (the library and
    # zero-rated sites included): what keeps a session from ending as idle
    active: bool = False
