"""Pure planner: the captive firewall as one nftables JSON transaction for table `inet relais`.

Nothing here touches the kernel. ``render_ruleset`` turns (config, desired state) into the
document ``nft -j -f -`` applies atomically (flush + recreate of our table only);
``device_add``/``device_remove`` give the few commands that add or remove ONE device, so a
login never reloads the table (and never resets other devices' counters).

How a packet is judged (LAN side ``config.network.lan.interface``):

* ``mark_pre`` (prerouting, mangle): blocked MACs dropped; staff MACs get meta mark 2,
  authorised devices mark 1 (``ether saddr . ip saddr @auth4``, ``@auth4m`` when the IP is
  not known yet, ``@auth6`` by MAC for IPv6), everyone else mark 0.
* ``nat_pre``: mark 0 devices: HTTP to anywhere but the hub -> portal port, DNS -> the hub.
* ``input``: from the LAN only DHCP, DNS, ICMP/NDP and the portal ports reach the hub.
* ``forward``: LAN->LAN dropped (isolation); staff accepted uncounted; authorised devices:
  zero-rated destinations accepted uncounted (the connection's conntrack mark is the
  device's slot with ``ZR_FLAG``: downloads are still shaped in its class), otherwise the
  connection gets the device's slot as conntrack mark, then the device's quota object
  (over N bytes -> drop) and its counter (a per-element counter of set ``cnt_up``);
  unauthorised devices reach only the walled garden, TCP elsewhere gets a reset, the rest
  is dropped. Downloads are charged through the connection's mark (set ``cnt_dn``), so up
  and down, IPv4 and IPv6 share one quota per device.

Why per-element counters and not named counter objects: every ``nft`` command that adds an
element loads all of the table's named objects first, so named counters made each login
slower as devices accumulated. Only the quota stays a named object (per-element quotas
cannot carry per-device limits with nft 1.0.x), one per device with a data quota.
* ``nat_post``: IPv4 from the LAN masqueraded out of the WAN interface (IPv6 is routed).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hub_agent.config import HubConfig
from hub_agent.enforce.model import DesiredState, Grant

TABLE = "relais"
FAMILY = "inet"

MARK_AUTH = 1
MARK_STAFF = 2

SLOT_MIN = 0x100  # slots double as tc class minors (1:slot) and conntrack marks
SLOT_MAX = 0xFFFE
ZR_FLAG = 0x10000  # conntrack mark bit: a zero-rated connection of the slot in the low bits
STAFF_CT = 0x20000  # conntrack mark of a staff device's connection: its downloads' class

# Sets dnsmasq fills (nftset=) as the hub's resolver answers listed domains; their contents
# are learned at run time, so reloads carry them over and comparisons ignore them.
DYNAMIC_SETS = ("wg4", "wg6", "zr4", "zr6")
# Per-device maps and sets: compared element by element.
DEVICE_SETS = ("auth4", "auth4m", "auth6")
DEVICE_MAPS = ("slot_of", "zslot_of", "quota_of", "prio_up", "prio_dn")
COUNTER_SETS = ("cnt_up", "cnt_dn")  # slot -> per-element counter

Json = dict[str, Any]
Expr = dict[str, Any]


# --- small expression builders (the nft JSON schema, nft 1.0.x) ---------------------------


def _payload(proto: str, field: str) -> Expr:
    return {"payload": {"protocol": proto, "field": field}}


def _meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def _ct(key: str) -> Expr:
    return {"ct": {"key": key}}


def _match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _set_mark(value: int) -> Expr:
    return {"mangle": {"key": _meta("mark"), "value": value}}


def _set_priority(classid: str) -> Expr:
    return {"mangle": {"key": _meta("priority"), "value": classid}}


def tc_classid(slot: int) -> str:
    """The HTB class (major 1) a device's slot names, as nft writes a classid."""
    return f"1:{slot:x}"


STAFF_CLASS = "1:10"  # tc_plan.STAFF

# IP protocol numbers, not names: nft resolves names through /etc/protocols, which a
# minimal Debian (no netbase) lacks ("Could not resolve protocol name"; found by booting
# the deployed box). Listings print names back; rules are compared by comment.
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_ICMPV6 = 1, 6, 58

ACCEPT: Expr = {"accept": None}
DROP: Expr = {"drop": None}
RETURN: Expr = {"return": None}
TCP_RESET: Expr = {"reject": {"type": "tcp reset"}}


def _jump(chain: str) -> Expr:
    return {"jump": {"target": chain}}


def _lookup_ctr_map(kind: str, mapname: str) -> Expr:
    return {kind: {"map": {"key": _ct("mark"), "data": f"@{mapname}"}}}


def _set_ct_mark_from(mapname: str) -> Expr:
    value = {"map": {"key": _payload("ether", "saddr"), "data": f"@{mapname}"}}
    return {"mangle": {"key": _ct("mark"), "value": value}}


ZR_MARK = _set_ct_mark_from("zslot_of")


# --- names ---------------------------------------------------------------------------------


def mac_key(mac: str) -> str:
    return mac.replace(":", "")


def quota_name(mac: str) -> str:
    return f"q_{mac_key(mac)}"


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


# --- the static skeleton -----------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    chain: str
    comment: str
    expr: tuple[Expr, ...]

    @property
    def tagged(self) -> str:
        """The comment the kernel holds: the name and a digest of the rule's body. Tables
        are compared by comment (listings print expressions back in another shape), so a
        rule whose body a config changes (the portal's port, the LAN subnet) differs too."""
        body = json.dumps(self.expr, sort_keys=True, default=str).encode()
        return f"{self.comment}#{hashlib.sha256(body).hexdigest()[:8]}"


def rule_name(comment: str) -> str:
    """A kernel rule's comment back to the rule's name (``RuleSpec.comment``)."""
    return comment.partition("#")[0]


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


def portal_ports(config: HubConfig) -> list[int]:
    ports = {config.portal.http_port, config.content.serve_port}
    if config.portal.https_port:
        ports.add(config.portal.https_port)
    return sorted(ports)


def _sets(config: HubConfig, state: DesiredState) -> list[Json]:
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


def chains() -> list[Json]:
    def base(name: str, typ: str, hook: str, prio: int) -> Json:
        return {
            "chain": {
                "family": FAMILY,
                "table": TABLE,
                "name": name,
                "type": typ,
                "hook": hook,
                "prio": prio,
                "policy": "accept",
            }
        }

    def regular(name: str) -> Json:
        return {"chain": {"family": FAMILY, "table": TABLE, "name": name}}

    return [
        base("mark_pre", "filter", "prerouting", -150),
        base("nat_pre", "nat", "prerouting", -100),
        base("input", "filter", "input", 0),
        base("forward", "filter", "forward", 0),
        base("nat_post", "nat", "postrouting", 100),
        regular("lan_in"),
        regular("from_lan"),
        regular("authed"),
        regular("to_lan"),
    ]


def rules(config: HubConfig) -> list[RuleSpec]:
    lan = config.network.lan.interface
    wan = config.network.wan.interface
    lan_net = config.network.lan.address.network
    iif_lan = _match(_meta("iifname"), lan)
    oif_lan = _match(_meta("oifname"), lan)
    ether_src = _payload("ether", "saddr")
    v4 = _match(_meta("nfproto"), "ipv4")
    v6 = _match(_meta("nfproto"), "ipv6")
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    est = _match(_ct("state"), ["established", "related"], "in")
    portal = config.portal.http_port

    r: list[tuple[str, str, list[Expr]]] = [
        # mark_pre: classify every packet arriving from the LAN, once.
        ("mark_pre", "only-lan", [_match(_meta("iifname"), lan, "!="), RETURN]),
        ("mark_pre", "reset-mark", [_set_mark(0)]),
        ("mark_pre", "blocked", [_match(ether_src, "@blocked"), DROP]),
        ("mark_pre", "staff", [_match(ether_src, "@staff"), _set_mark(MARK_STAFF), RETURN]),
        (
            "mark_pre",
            "auth4",
            [
                _match({"concat": [ether_src, _payload("ip", "saddr")]}, "@auth4"),
                _set_mark(MARK_AUTH),
                RETURN,
            ],
        ),
        ("mark_pre", "auth4m", [v4, _match(ether_src, "@auth4m"), _set_mark(MARK_AUTH), RETURN]),
        ("mark_pre", "auth6", [v6, _match(ether_src, "@auth6"), _set_mark(MARK_AUTH), RETURN]),
        # nat_pre: the captive part, for unauthorised devices only. Port 80 to anywhere but
        # the hub and the walled garden lands on the portal; DNS to any resolver lands on
        # the hub's own (which fills the walled-garden sets).
        ("nat_pre", "only-lan", [_match(_meta("iifname"), lan, "!="), RETURN]),
        ("nat_pre", "only-unauth", [_match(_meta("mark"), 0, "!="), RETURN]),
        ("nat_pre", "to-hub", [local, RETURN]),
        ("nat_pre", "walled-net4", [_match(_payload("ip", "daddr"), "@wgnet4"), RETURN]),
        ("nat_pre", "walled-dns4", [_match(_payload("ip", "daddr"), "@wg4"), RETURN]),
        ("nat_pre", "walled-net6", [_match(_payload("ip6", "daddr"), "@wgnet6"), RETURN]),
        ("nat_pre", "walled-dns6", [_match(_payload("ip6", "daddr"), "@wg6"), RETURN]),
        (
            "nat_pre",
            "portal-redirect",
            [_match(_payload("tcp", "dport"), 80), {"redirect": {"port": portal}}],
        ),
        ("nat_pre", "dns-redirect-udp", [_match(_payload("udp", "dport"), 53), {"redirect": {}}]),
        ("nat_pre", "dns-redirect-tcp", [_match(_payload("tcp", "dport"), 53), {"redirect": {}}]),
        # input: what the LAN may reach on the hub itself.
        ("input", "lan", [iif_lan, _jump("lan_in")]),
        ("lan_in", "established", [est, ACCEPT]),
        (
            "lan_in",
            "icmp",
            [_match(_meta("l4proto"), {"set": [IPPROTO_ICMP, IPPROTO_ICMPV6]}), ACCEPT],
        ),
        (
            "lan_in",
            "dhcp-dns-udp",
            [_match(_payload("udp", "dport"), {"set": [53, 67, 547]}), ACCEPT],
        ),
        ("lan_in", "dns-tcp", [_match(_payload("tcp", "dport"), 53), ACCEPT]),
        (
            "lan_in",
            "portal",
            [_match(_payload("tcp", "dport"), {"set": portal_ports(config)}), ACCEPT],
        ),
        ("lan_in", "tcp-reset", [_match(_meta("l4proto"), IPPROTO_TCP), TCP_RESET]),
        ("lan_in", "drop", [DROP]),
        # forward
        ("forward", "from-lan", [iif_lan, _jump("from_lan")]),
        ("forward", "to-lan", [oif_lan, _jump("to_lan")]),
    ]
    if config.network.lan.client_isolation:
        r.append(("from_lan", "isolation", [oif_lan, DROP]))
    r += [
        (
            "from_lan",
            "staff",
            [
                _match(_meta("mark"), MARK_STAFF),
                {"counter": None},  # staff activity: their guarantee is held while busy
                _set_priority(STAFF_CLASS),
                {"mangle": {"key": _ct("mark"), "value": STAFF_CT}},
                ACCEPT,
            ],
        ),
        ("from_lan", "authorised", [_match(_meta("mark"), MARK_AUTH), _jump("authed")]),
        ("from_lan", "walled-net4", [_match(_payload("ip", "daddr"), "@wgnet4"), ACCEPT]),
        ("from_lan", "walled-dns4", [_match(_payload("ip", "daddr"), "@wg4"), ACCEPT]),
        ("from_lan", "walled-net6", [_match(_payload("ip6", "daddr"), "@wgnet6"), ACCEPT]),
        ("from_lan", "walled-dns6", [_match(_payload("ip6", "daddr"), "@wg6"), ACCEPT]),
        ("from_lan", "tcp-reset", [_match(_meta("l4proto"), IPPROTO_TCP), TCP_RESET]),
        ("from_lan", "drop", [DROP]),
        # upload shaping: the WAN's HTB honours the priority (tc_plan's device class)
        (
            "authed",
            "upload-class",
            [
                {
                    "mangle": {
                        "key": _meta("priority"),
                        "value": {"map": {"key": ether_src, "data": "@prio_up"}},
                    }
                }
            ],
        ),
        # zero-rated: uncounted, but marked (slot | ZR_FLAG) so downloads keep their class
        ("authed", "zero-net4", [_match(_payload("ip", "daddr"), "@zrnet4"), ZR_MARK, ACCEPT]),
        ("authed", "zero-dns4", [_match(_payload("ip", "daddr"), "@zr4"), ZR_MARK, ACCEPT]),
        ("authed", "zero-net6", [_match(_payload("ip6", "daddr"), "@zrnet6"), ZR_MARK, ACCEPT]),
        ("authed", "zero-dns6", [_match(_payload("ip6", "daddr"), "@zr6"), ZR_MARK, ACCEPT]),
        ("authed", "slot-mark", [_set_ct_mark_from("slot_of")]),
        ("authed", "quota", [_lookup_ctr_map("quota", "quota_of"), DROP]),
        ("authed", "count-up", [_match(_ct("mark"), "@cnt_up"), ACCEPT]),
        ("authed", "no-slot", [DROP]),
        # to_lan: only answers; uncounted unless the connection carries a device's slot.
        (
            "to_lan",
            "answers-only",
            [_match(_ct("state"), {"set": ["established", "related"]}, "!="), DROP],
        ),
        # staff: class by the connection's mark, so a staff device's downloads get the
        # guarantee whatever address it has (learnt by MAC, no per-address tc filter)
        (
            "to_lan",
            "staff",
            [_match(_ct("mark"), STAFF_CT), _set_priority(STAFF_CLASS), ACCEPT],
        ),
        # download class by the connection's mark (slot, or slot | ZR_FLAG): covers IPv6
        # privacy addresses and unknown IPs, and keeps tc free of per-device filters
        (
            "to_lan",
            "download-class",
            [
                {
                    "mangle": {
                        "key": _meta("priority"),
                        "value": {"map": {"key": _ct("mark"), "data": "@prio_dn"}},
                    }
                }
            ],
        ),
        ("to_lan", "uncounted", [_match(_ct("mark"), 0), ACCEPT]),
        ("to_lan", "zero-rated", [_match({"&": [_ct("mark"), ZR_FLAG]}, 0, "!="), ACCEPT]),
        ("to_lan", "quota", [_lookup_ctr_map("quota", "quota_of"), DROP]),
        ("to_lan", "count-down", [_match(_ct("mark"), "@cnt_dn"), ACCEPT]),
        ("to_lan", "gone-device", [DROP]),
        (
            "nat_post",
            "masquerade",
            [
                v4,
                _match(
                    _payload("ip", "saddr"),
                    {"prefix": {"addr": str(lan_net.network_address), "len": lan_net.prefixlen}},
                ),
                _match(_meta("oifname"), wan),
                {"masquerade": None},
            ],
        ),
    ]
    return [RuleSpec(chain, comment, tuple(expr)) for chain, comment, expr in r]


def _rule_cmd(spec: RuleSpec) -> Json:
    return {
        "add": {
            "rule": {
                "family": FAMILY,
                "table": TABLE,
                "chain": spec.chain,
                "comment": spec.tagged,
                "expr": list(spec.expr),
            }
        }
    }


# --- devices --------------------------------------------------------------------------------


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


# --- the whole table ------------------------------------------------------------------------


def counted_grants(state: DesiredState) -> list[Grant]:
    """Grants that get per-device kernel state (staff devices bypass the portal uncounted)."""
    return [g for g in state.grants if not g.staff]


def render_ruleset(
    config: HubConfig,
    state: DesiredState,
    slots: Mapping[str, int] | None = None,
    dynamic: Mapping[str, list[Any]] | None = None,
) -> Json:
    """The full transaction: flush + recreate table ``inet relais`` with every device.

    ``slots`` keeps live slot assignments (see ``assign_slots``); ``dynamic`` carries the
    resolver-filled sets' current elements over the reload.
    """
    grants = counted_grants(state)
    slot_of = assign_slots((g.mac for g in grants), slots)
    table = {"table": {"family": FAMILY, "name": TABLE}}
    cmds: list[Json] = [{"add": table}, {"delete": table}, {"add": table}]
    cmds += [{"add": o} for g in grants for o in device_objects(g)]
    sets = _sets(config, state)
    for obj in sets:
        body = obj.get("set")
        if body and dynamic and dynamic.get(body["name"]) and body["name"] in DYNAMIC_SETS:
            body["elem"] = list(dynamic[body["name"]])
    cmds += [{"add": o} for o in sets]
    cmds += [{"add": c} for c in chains()]
    cmds += [_rule_cmd(r) for r in rules(config)]
    for g in grants:
        cmds += [{"add": e} for e in device_elements(g, slot_of[g.mac])]
    return {"nftables": cmds}
