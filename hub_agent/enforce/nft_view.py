"""Comparing an nft table with its plan: a summary either a rendered transaction or
``nft -j list table`` reduces to, the difference between two, and the quotas a full
reload carries over (split from nft_plan.py, which renders)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub_agent.enforce.nft_expr import Json
from hub_agent.enforce.nft_sets import DEVICE_SETS


@dataclass(frozen=True)
class TableView:
    """A comparable summary of the table: skeleton, static sets and per-device state."""

    chains: dict[str, tuple[Any, ...]]
    rules: dict[str, tuple[str, ...]]  # chain -> rule comments in order
    sets: dict[str, tuple[Any, ...]]  # name -> (type, flags, map data type)
    static_elems: dict[str, frozenset[str]]
    devices: dict[str, tuple[Any, ...]]  # mac -> (slot, auth elements, quota bytes or None)


def _canon(e: Any) -> str:
    """One element as a comparable string (MACs, addresses, prefixes, concatenations)."""
    if isinstance(e, dict):
        if "elem" in e:
            return _canon(e["elem"]["val"])
        if "prefix" in e:
            p = e["prefix"]
            return str(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
        if "concat" in e:
            return " . ".join(_canon(x) for x in e["concat"])
        if "range" in e:
            return "-".join(_canon(x) for x in e["range"])
    if isinstance(e, list):
        return " : ".join(_canon(x) for x in e)
    return str(e)


def view_of(doc: Json) -> TableView:
    """Summarise either a rendered transaction or ``nft -j list table`` output."""
    chains_: dict[str, tuple[Any, ...]] = {}
    rules_: dict[str, list[str]] = {}
    sets_: dict[str, tuple[Any, ...]] = {}
    elems: dict[str, list[Any]] = {}
    quotas: dict[str, int] = {}
    for item in doc.get("nftables", []):
        if "add" in item:
            item = item["add"]
        elif any(k in item for k in ("delete", "flush", "metainfo")):
            continue
        if "chain" in item:
            c = item["chain"]
            chains_[c["name"]] = (c.get("type"), c.get("hook"), c.get("prio"), c.get("policy"))
            rules_.setdefault(c["name"], [])
        elif "rule" in item:
            r = item["rule"]
            rules_.setdefault(r["chain"], []).append(r.get("comment", "?"))
        elif "set" in item or "map" in item:
            s = item.get("set") or item["map"]
            typ = s["type"] if isinstance(s["type"], str) else tuple(s["type"])
            sets_[s["name"]] = (typ, tuple(sorted(s.get("flags", []))), s.get("map"))
            elems.setdefault(s["name"], []).extend(s.get("elem", []))
        elif "element" in item:
            el = item["element"]
            elems.setdefault(el["name"], []).extend(el["elem"])
        elif "quota" in item:
            quotas[item["quota"]["name"]] = item["quota"]["bytes"]
    static_names = ("staff", "blocked", "wgnet4", "wgnet6", "zrnet4", "zrnet6")
    static = {n: frozenset(_canon(e) for e in elems.get(n, [])) for n in static_names}
    devices: dict[str, tuple[Any, ...]] = {}
    mark_to_mac: dict[int, str] = {}
    for pair in elems.get("slot_of", []):
        mac, slot = str(pair[0]), int(pair[1])
        mark_to_mac[slot] = mac
    auth: dict[str, set[str]] = {}
    for name in DEVICE_SETS:
        for e in elems.get(name, []):
            c = _canon(e)
            auth.setdefault(c.split(" . ")[0], set()).add(f"{name}:{c}")
    quota_of = {int(p[0]): str(p[1]) for p in elems.get("quota_of", [])}
    for slot, mac in mark_to_mac.items():
        q = quota_of.get(slot)
        devices[mac] = (
            slot,
            tuple(sorted(auth.get(mac, set()))),
            quotas.get(q) if q else None,
        )
    return TableView(
        chains=chains_,
        rules={k: tuple(v) for k, v in rules_.items()},
        sets=sets_,
        static_elems=static,
        devices=devices,
    )


@dataclass(frozen=True)
class TableDiff:
    skeleton_ok: bool  # chains, rules, set definitions and static set contents
    missing: tuple[str, ...]  # MACs desired but absent in the kernel
    extra: tuple[str, ...]  # MACs in the kernel but not desired
    changed: tuple[str, ...]  # MACs present in both but different

    @property
    def equal(self) -> bool:
        return self.skeleton_ok and not (self.missing or self.extra or self.changed)


def diff_views(desired: TableView, live: TableView) -> TableDiff:
    skeleton_ok = (
        desired.chains == live.chains
        and desired.rules == live.rules
        and desired.sets == live.sets
        and desired.static_elems == live.static_elems
    )
    want, have = desired.devices, live.devices
    missing = tuple(sorted(set(want) - set(have)))
    extra = tuple(sorted(set(have) - set(want)))
    changed = tuple(sorted(m for m in set(want) & set(have) if want[m] != have[m]))
    return TableDiff(skeleton_ok, missing, extra, changed)


def carry_quotas(doc: Json, quotas: Mapping[str, tuple[int, int]]) -> Json:
    """Copy live quota usage (limit, used) into a rendered transaction, so a full reload
    keeps every device's exact cut-off. Quotas whose limit changed start afresh (the new
    limit already is the remaining allowance). Byte counters cannot be carried this way
    (nft 1.0.x ignores element counter values in JSON): the enforcer keeps an offset."""
    for cmd in doc["nftables"]:
        obj = cmd.get("add", {})
        if "quota" in obj and obj["quota"].get("name") in quotas:
            limit, used = quotas[obj["quota"]["name"]]
            if limit == obj["quota"]["bytes"]:
                obj["quota"]["used"] = used
    return doc
