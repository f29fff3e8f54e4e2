"""The table's sets and maps: staff and blocked MACs, the walled garden and zero-rated
destinations (fixed CIDRs from the config, addresses the resolver learns), and the
per-device sets and maps the device commands fill."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from hub_agent.config import HubConfig
from hub_agent.enforce.model import DesiredState
from hub_agent.enforce.nft_expr import FAMILY, TABLE, Json

# Sets dnsmasq fills (nftset=) as the hub's resolver answers listed domains; their contents
# are learned at run time, so reloads carry them over and comparisons ignore them.
DYNAMIC_SETS = ("wg4", "wg6", "zr4", "zr6")
# Per-device maps and sets: compared element by element.
DEVICE_SETS = ("auth4", "auth4m", "auth6")
DEVICE_MAPS = ("slot_of", "zslot_of", "quota_of", "prio_up", "prio_dn")
COUNTER_SETS = ("cnt_up", "cnt_dn")  # slot -> per-element counter


def _cidrs(nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network], v: int) -> list[Any]:
    out: list[Any] = []
    for n in sorted((n for n in nets if n.version == v), key=lambda n: int(n.network_address)):
        if n.prefixlen == n.max_prefixlen:
            out.append(str(n.network_address))
        else:
            out.append({"prefix": {"addr": str(n.network_address), "len": n.prefixlen}})
    return out


def staff_macs(config: HubConfig, state: DesiredState) -> list[str]:
    macs = {d.mac for d in config.staff.devices} | {g.mac for g in state.grants if g.staff}
    return sorted(macs)


def sets(config: HubConfig, state: DesiredState) -> list[Json]:
    """Every set and map of the table, with the elements the config and state fix."""

    def s(name: str, typ: Any, flags: list[str] | None = None, **extra: Any) -> Json:
        body: Json = {"family": FAMILY, "table": TABLE, "name": name, "type": typ}
        if flags:
            body["flags"] = flags
        body.update(extra)
        return {"set": body}

    def m(name: str, typ: str, data: str) -> Json:
        return {"map": {"family": FAMILY, "table": TABLE, "name": name, "type": typ, "map": data}}

    wg, zr = config.walled_garden.cidrs, config.zero_rated.cidrs
    out = [
        s("staff", "ether_addr"),
        s("blocked", "ether_addr"),
        s("auth4", ["ether_addr", "ipv4_addr"], ["timeout"], stmt=[{"counter": None}]),
        s("auth4m", "ether_addr", ["timeout"], stmt=[{"counter": None}]),
        s("auth6", "ether_addr", ["timeout"], stmt=[{"counter": None}]),
        s("wgnet4", "ipv4_addr", ["interval"]),
        s("wgnet6", "ipv6_addr", ["interval"]),
        s("zrnet4", "ipv4_addr", ["interval"]),
        s("zrnet6", "ipv6_addr", ["interval"]),
        s("wg4", "ipv4_addr"),
        s("wg6", "ipv6_addr"),
        s("zr4", "ipv4_addr"),
        s("zr6", "ipv6_addr"),
        m("slot_of", "ether_addr", "mark"),
        m("zslot_of", "ether_addr", "mark"),
        s("cnt_up", "mark", stmt=[{"counter": None}]),
        s("cnt_dn", "mark", stmt=[{"counter": None}]),
        m("quota_of", "mark", "quota"),
        m("prio_up", "ether_addr", "classid"),
        m("prio_dn", "mark", "classid"),
    ]
    static_elems: dict[str, list[Any]] = {
        "staff": staff_macs(config, state),
        "blocked": sorted(state.blocked_macs),
        "wgnet4": _cidrs(wg, 4),
        "wgnet6": _cidrs(wg, 6),
        "zrnet4": _cidrs(zr, 4),
        "zrnet6": _cidrs(zr, 6),
    }
    for obj in out:
        body = obj.get("set")
        if body and static_elems.get(body["name"]):
            body["elem"] = static_elems[body["name"]]
    return out
