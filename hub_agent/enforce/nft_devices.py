"""Per-device commands: what authorises, re-authorises or removes ONE device (its auth set
elements, slot marks, counters, classes and quota object), so a login never reloads the
table and never resets other devices' counters.

Why per-element counters and not named counter objects: every ``nft`` command that adds an
element loads all of the table's named objects first, so named counters made each login
slower as devices accumulated. Only the quota stays a named object (per-element quotas
cannot carry per-device limits with nft 1.0.x), one per device with a data quota.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub_agent.enforce.model import Grant
from hub_agent.enforce.nft_expr import FAMILY, TABLE, ZR_FLAG, Json, tc_classid


def mac_key(mac: str) -> str:
    return mac.replace(":", "")


def quota_name(mac: str) -> str:
    return f"q_{mac_key(mac)}"


def _elem(name: str, elems: list[Any]) -> Json:
    return {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}


def _timed(val: Any, timeout_s: int | None) -> Any:
    return {"elem": {"val": val, "timeout": timeout_s}} if timeout_s else val


def auth_elements(grant: Grant) -> dict[str, list[Any]]:
    """The auth set elements one grant needs (without timeouts: used for comparison too)."""
    out: dict[str, list[Any]] = {"auth6": [grant.mac]}
    if grant.ip:
        out["auth4"] = [{"concat": [grant.mac, grant.ip]}]
    else:
        out["auth4m"] = [grant.mac]
    return out


def _obj(kind: str, name: str, **body: Any) -> Json:
    return {kind: {"family": FAMILY, "table": TABLE, "name": name, **body}}


def device_objects(grant: Grant) -> list[Json]:
    if grant.quota_bytes is None:
        return []
    return [_obj("quota", quota_name(grant.mac), bytes=grant.quota_bytes, inv=True)]


def _slot_elements(mac: str, slot: int) -> list[Json]:
    """The slot's marks, counters and classes (what a re-login keeps)."""
    return [
        _elem("slot_of", [[mac, slot]]),
        _elem("zslot_of", [[mac, slot | ZR_FLAG]]),
        _elem("cnt_up", [slot]),
        _elem("cnt_dn", [slot]),
        _elem("prio_up", [[mac, tc_classid(slot)]]),
        _elem("prio_dn", [[slot, tc_classid(slot)], [slot | ZR_FLAG, tc_classid(slot)]]),
    ]


def device_elements(grant: Grant, slot: int) -> list[Json]:
    """Map and set elements for one device (its quota object must exist first)."""
    out = _slot_elements(grant.mac, slot)
    if grant.quota_bytes is not None:
        out.append(_elem("quota_of", [[slot, quota_name(grant.mac)]]))
    for name, elems in auth_elements(grant).items():
        out.append(_elem(name, [_timed(e, grant.timeout_s) for e in elems]))
    return out


def device_add(grant: Grant, slot: int) -> list[Json]:
    """Commands that authorise one device (counters start at zero)."""
    return [{"add": o} for o in device_objects(grant)] + [
        {"add": e} for e in device_elements(grant, slot)
    ]


@dataclass(frozen=True)
class LiveDevice:
    """What the kernel holds for one device (read back by the applier)."""

    mac: str
    slot: int
    auth: dict[str, list[Any]]  # set name -> elements present (no timeouts)
    has_quota: bool
    quota_bytes: int | None = None
    quota_used: int = 0
    up_bytes: int = 0  # counted (not zero-rated) bytes, per-element counters of cnt_up/dn
    down_bytes: int = 0
    sent_packets: int = 0  # every packet from the device (auth set counters), for idleness


def device_remove(dev: LiveDevice, keep_counters: bool = False) -> list[Json]:
    """Commands that remove one device. Elements go before the objects they reference.

    Each delete is preceded by an ``add`` of the same element/object: adding what exists is
    a no-op and deleting what was just ensured cannot fail, so removing something a kernel
    timeout already removed still succeeds in one transaction ("already removed" is fine).
    """
    objs: list[Json] = []
    if dev.has_quota:
        objs.append(_obj("quota", quota_name(dev.mac), bytes=1, inv=True))
    elems: list[Json] = [_elem(n, [e]) for n, es in sorted(dev.auth.items()) for e in es]
    if dev.has_quota:
        elems.append(_elem("quota_of", [[dev.slot, quota_name(dev.mac)]]))
    if not keep_counters:
        elems += _slot_elements(dev.mac, dev.slot)
    # ensure objects, then ensure+delete elements (which reference them), then objects
    cmds: list[Json] = [{"add": o} for o in objs]
    for e in elems:
        cmds += [{"add": e}, {"delete": e}]
    cmds += [{"delete": o} for o in objs]
    return cmds


def device_update(old: LiveDevice, grant: Grant) -> list[Json]:
    """Re-authorise a known device (new IP, timeout or quota) keeping its byte counters."""
    cmds = device_remove(old, keep_counters=True)
    if grant.quota_bytes is not None:
        cmds.append(
            {"add": _obj("quota", quota_name(grant.mac), bytes=grant.quota_bytes, inv=True)}
        )
        cmds.append({"add": _elem("quota_of", [[old.slot, quota_name(grant.mac)]])})
    for name, elems in auth_elements(grant).items():
        cmds.append({"add": _elem(name, [_timed(e, grant.timeout_s) for e in elems])})
    return cmds


def set_replace(name: str, elems: list[Any]) -> list[Json]:
    """Replace the contents of one set (e.g. ``blocked``) in one transaction."""
    cmds: list[Json] = [{"flush": {"set": {"family": FAMILY, "table": TABLE, "name": name}}}]
    if elems:
        cmds.append({"add": _elem(name, elems)})
    return cmds
