"""Thin applier for nft_plan: runs ``nft -j`` (optionally inside a named netns) and reads back.

Every transaction is logged at DEBUG (and handed to an optional tracer), and ``dry_run``
records transactions without running them, so the agent is debuggable in the field.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from typing import Any

from hub_agent.enforce.nft_devices import LiveDevice
from hub_agent.enforce.nft_expr import FAMILY, TABLE, Json, rule_name
from hub_agent.enforce.nft_sets import COUNTER_SETS, DEVICE_SETS, DYNAMIC_SETS
from hub_agent.enforce.nft_view import _canon

log = logging.getLogger(__name__)


class NftError(RuntimeError):
    """nft refused a transaction; ``stderr`` holds its explanation."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(f"{message}: {stderr.strip()}" if stderr else message)
        self.stderr = stderr


class NftApplier:
    def __init__(
        self,
        netns: str | None = None,
        dry_run: bool = False,
        tracer: Callable[[Json], None] | None = None,
        timeout: float = 30,
    ) -> None:
        self.netns = netns
        self.dry_run = dry_run
        self.tracer = tracer
        self.timeout = timeout
        self.applied: list[Json] = []  # dry-run record (and last transactions when tracing)

    def _cmd(self, *args: str) -> list[str]:
        base = ["nft", *args]
        # nsenter joins only the network namespace (cheaper than `ip netns exec`)
        return ["nsenter", f"--net=/run/netns/{self.netns}", *base] if self.netns else base

    def apply(self, doc: Json | list[Json]) -> None:
        """Run one transaction (all commands or none)."""
        if isinstance(doc, list):
            doc = {"nftables": doc}
        if not doc["nftables"]:
            return
        log.debug("nft transaction: %d commands", len(doc["nftables"]))
        if self.tracer:
            self.tracer(doc)
        if self.dry_run:
            self.applied.append(doc)
            return
        p = subprocess.run(
            self._cmd("-j", "-f", "-"),
            input=json.dumps(doc),
            text=True,
            capture_output=True,
            timeout=self.timeout,
        )
        if p.returncode != 0:
            raise NftError("nft transaction failed", p.stderr)

    def _list(self, *what: str) -> Json:
        p = subprocess.run(
            self._cmd("-j", "list", *what), text=True, capture_output=True, timeout=self.timeout
        )
        if p.returncode != 0:
            if "No such file or directory" in p.stderr:
                return {"nftables": []}
            raise NftError(f"nft list {' '.join(what)} failed", p.stderr)
        out: Json = json.loads(p.stdout)
        return out

    def list_table(self) -> Json:
        """The live table as ``nft -j list table`` prints it (empty when absent)."""
        if self.dry_run:
            return {"nftables": []}
        return self._list("table", FAMILY, TABLE)

    def table_exists(self) -> bool:
        return bool(self.list_table()["nftables"])


def objects_of(listing: Json, kind: str) -> dict[str, dict[str, Any]]:
    """Named objects (``counter``/``quota``) from a listing, by name."""
    out: dict[str, dict[str, Any]] = {}
    for item in listing.get("nftables", []):
        if kind in item and isinstance(item[kind], dict) and "name" in item[kind]:
            out[item[kind]["name"]] = item[kind]
    return out


def rule_packets(listing: Json, chain: str, comment: str) -> int:
    """Packets counted by one rule's ``counter`` statement (0 when absent)."""
    for item in listing.get("nftables", []):
        r = item.get("rule")
        if (
            isinstance(r, dict)
            and r.get("chain") == chain
            and rule_name(str(r.get("comment", ""))) == comment
        ):
            for e in r.get("expr", []):
                if isinstance(e, dict) and isinstance(e.get("counter"), dict):
                    return int(e["counter"].get("packets", 0))
    return 0


def _set_elems(listing: Json) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in listing.get("nftables", []):
        s = item.get("set") or item.get("map")
        if isinstance(s, dict) and "name" in s:
            out[s["name"]] = list(s.get("elem", []))
    return out


def dynamic_elements(listing: Json) -> dict[str, list[Any]]:
    """Resolver-filled walled-garden/zero-rated addresses, to carry over a reload."""
    elems = _set_elems(listing)
    return {n: [_canon(e) for e in elems.get(n, [])] for n in DYNAMIC_SETS if elems.get(n)}


def _counted_bytes(elems: list[Any]) -> dict[int, int]:
    """slot -> bytes of a per-element counter set (``{"elem": {"val", "counter"}}``)."""
    out: dict[int, int] = {}
    for e in elems:
        if isinstance(e, dict) and "elem" in e:
            out[int(e["elem"]["val"])] = int((e["elem"].get("counter") or {}).get("bytes", 0))
        else:
            out[int(e)] = 0
    return out


def live_devices(listing: Json) -> dict[str, LiveDevice]:
    """Per-device state read back from a table listing."""
    elems = _set_elems(listing)
    quotas = objects_of(listing, "quota")
    up, down = (_counted_bytes(elems.get(n, [])) for n in COUNTER_SETS)
    quota_by_slot = {int(p[0]): str(p[1]) for p in elems.get("quota_of", [])}
    auth: dict[str, dict[str, list[Any]]] = {}
    sent: dict[str, int] = {}
    for name in DEVICE_SETS:
        for e in elems.get(name, []):
            timed = isinstance(e, dict) and "elem" in e
            val = e["elem"]["val"] if timed else e
            mac = str(val["concat"][0] if isinstance(val, dict) else val)
            auth.setdefault(mac, {}).setdefault(name, []).append(val)
            if timed:
                packets = (e["elem"].get("counter") or {}).get("packets", 0)
                sent[mac] = sent.get(mac, 0) + int(packets)
    out: dict[str, LiveDevice] = {}
    for pair in elems.get("slot_of", []):
        mac, slot = str(pair[0]), int(pair[1])
        qname = quota_by_slot.get(slot)
        q = quotas.get(qname) if qname else None
        out[mac] = LiveDevice(
            mac=mac,
            slot=slot,
            auth=auth.get(mac, {}),
            has_quota=q is not None,
            quota_bytes=int(q["bytes"]) if q else None,
            quota_used=int(q.get("used", 0)) if q else 0,
            up_bytes=up.get(slot, 0),
            down_bytes=down.get(slot, 0),
            sent_packets=sent.get(mac, 0),
        )
    return out
