"""Shaping slots: one number per counted device, stable across reloads and restarts.

A slot is at once the device's tc class minor (1:slot), its connections' conntrack mark
and its counters' key, so a device must keep it for as long as it is authorised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

SLOT_MIN = 0x100  # slots double as tc class minors (1:slot) and conntrack marks
SLOT_MAX = 0xFFFE


def _preferred_slot(mac: str) -> int:
    digest = hashlib.blake2s(mac.encode(), digest_size=4).digest()
    return SLOT_MIN + int.from_bytes(digest, "big") % (SLOT_MAX - SLOT_MIN + 1)


def free_slot(mac: str, used: set[int]) -> int:
    """The MAC's preferred slot, or the next free one after it."""
    span = SLOT_MAX - SLOT_MIN + 1
    if len(used) >= span:
        raise ValueError("grants: more devices than shaping slots")
    slot = _preferred_slot(mac)
    while slot in used:
        slot = SLOT_MIN + (slot - SLOT_MIN + 1) % span
    return slot


def assign_slots(macs: Iterable[str], existing: Mapping[str, int] | None = None) -> dict[str, int]:
    """A stable slot per MAC: keep ``existing`` ones, hash new MACs and probe linearly.

    Slots live in the kernel (map ``slot_of``), so after a restart the applier passes the
    live assignments as ``existing`` and no device changes class or conntrack mark.
    """
    wanted = sorted(set(macs))
    out: dict[str, int] = {}
    used: set[int] = set()
    for mac in wanted:
        if existing and mac in existing and existing[mac] not in used:
            out[mac] = existing[mac]
            used.add(existing[mac])
    for mac in wanted:
        if mac not in out:
            out[mac] = free_slot(mac, used)
            used.add(out[mac])
    return out
