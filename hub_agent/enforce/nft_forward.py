"""The forwarding part of the table: what a device's traffic through the hub may do and
how it is counted (chains ``forward``, ``from_lan``, ``authed``, ``to_lan``, ``nat_post``).

LAN->LAN is dropped (isolation); staff are accepted uncounted; authorised devices:
zero-rated destinations are accepted uncounted (the connection's conntrack mark is the
device's slot with ``ZR_FLAG``: downloads are still shaped in its class), otherwise the
connection gets the device's slot as conntrack mark, then the device's quota object (over
N bytes -> drop) and its counter (a per-element counter of set ``cnt_up``); unauthorised
devices reach only the walled garden, TCP elsewhere gets a reset, the rest is dropped.
Downloads are charged through the connection's mark (set ``cnt_dn``), so up and down, IPv4
and IPv6 share one quota per device.
"""

from __future__ import annotations

from hub_agent.config import HubConfig
from hub_agent.enforce.nft_expr import (
    ACCEPT,
    DROP,
    IPPROTO_TCP,
    MARK_AUTH,
    MARK_STAFF,
    STAFF_CLASS,
    STAFF_CT,
    TCP_RESET,
    ZR_FLAG,
    Expr,
    RuleSpec,
    ct,
    jump,
    lookup_ctr_map,
    match,
    meta,
    payload,
    set_ct_mark_from,
    set_priority,
    specs,
)

ZR_MARK = set_ct_mark_from("zslot_of")


def forward_rules(config: HubConfig) -> list[RuleSpec]:
    """Rules of ``forward``, ``from_lan``, ``authed``, ``to_lan`` and ``nat_post``, in order."""
    lan = config.network.lan.interface
    wan = config.network.wan.interface
    lan_net = config.network.lan.address.network
    iif_lan = match(meta("iifname"), lan)
    oif_lan = match(meta("oifname"), lan)
    ether_src = payload("ether", "saddr")
    v4 = match(meta("nfproto"), "ipv4")

    r: list[tuple[str, str, list[Expr]]] = [
        # forward
        ("forward", "from-lan", [iif_lan, jump("from_lan")]),
        ("forward", "to-lan", [oif_lan, jump("to_lan")]),
    ]
    if config.network.lan.client_isolation:
        r.append(("from_lan", "isolation", [oif_lan, DROP]))
    r += [
        (
            "from_lan",
            "staff",
            [
                match(meta("mark"), MARK_STAFF),
                {"counter": None},  # staff activity: their guarantee is held while busy
                set_priority(STAFF_CLASS),
                {"mangle": {"key": ct("mark"), "value": STAFF_CT}},
                ACCEPT,
            ],
        ),
        ("from_lan", "authorised", [match(meta("mark"), MARK_AUTH), jump("authed")]),
        ("from_lan", "walled-net4", [match(payload("ip", "daddr"), "@wgnet4"), ACCEPT]),
        ("from_lan", "walled-dns4", [match(payload("ip", "daddr"), "@wg4"), ACCEPT]),
        ("from_lan", "walled-net6", [match(payload("ip6", "daddr"), "@wgnet6"), ACCEPT]),
        ("from_lan", "walled-dns6", [match(payload("ip6", "daddr"), "@wg6"), ACCEPT]),
        ("from_lan", "tcp-reset", [match(meta("l4proto"), IPPROTO_TCP), TCP_RESET]),
        ("from_lan", "drop", [DROP]),
        # upload shaping: the WAN's HTB honours the priority (tc_plan's device class)
        (
            "authed",
            "upload-class",
            [
                {
                    "mangle": {
                        "key": meta("priority"),
                        "value": {"map": {"key": ether_src, "data": "@prio_up"}},
                    }
                }
            ],
        ),
        # zero-rated: uncounted, but marked (slot | ZR_FLAG) so downloads keep their class
        ("authed", "zero-net4", [match(payload("ip", "daddr"), "@zrnet4"), ZR_MARK, ACCEPT]),
        ("authed", "zero-dns4", [match(payload("ip", "daddr"), "@zr4"), ZR_MARK, ACCEPT]),
        ("authed", "zero-net6", [match(payload("ip6", "daddr"), "@zrnet6"), ZR_MARK, ACCEPT]),
        ("authed", "zero-dns6", [match(payload("ip6", "daddr"), "@zr6"), ZR_MARK, ACCEPT]),
        ("authed", "slot-mark", [set_ct_mark_from("slot_of")]),
        ("authed", "quota", [lookup_ctr_map("quota", "quota_of"), DROP]),
        ("authed", "count-up", [match(ct("mark"), "@cnt_up"), ACCEPT]),
        ("authed", "no-slot", [DROP]),
        # to_lan: only answers; uncounted unless the connection carries a device's slot.
        (
            "to_lan",
            "answers-only",
            [match(ct("state"), {"set": ["established", "related"]}, "!="), DROP],
        ),
        # staff: class by the connection's mark, so a staff device's downloads get the
        # guarantee whatever address it has (learnt by MAC, no per-address tc filter)
        (
            "to_lan",
            "staff",
            [match(ct("mark"), STAFF_CT), set_priority(STAFF_CLASS), ACCEPT],
        ),
        # download class by the connection's mark (slot, or slot | ZR_FLAG): covers IPv6
        # privacy addresses and unknown IPs, and keeps tc free of per-device filters
        (
            "to_lan",
            "download-class",
            [
                {
                    "mangle": {
                        "key": meta("priority"),
                        "value": {"map": {"key": ct("mark"), "data": "@prio_dn"}},
                    }
                }
            ],
        ),
        ("to_lan", "uncounted", [match(ct("mark"), 0), ACCEPT]),
        ("to_lan", "zero-rated", [match({"&": [ct("mark"), ZR_FLAG]}, 0, "!="), ACCEPT]),
        ("to_lan", "quota", [lookup_ctr_map("quota", "quota_of"), DROP]),
        ("to_lan", "count-down", [match(ct("mark"), "@cnt_dn"), ACCEPT]),
        ("to_lan", "gone-device", [DROP]),
        (
            "nat_post",
            "masquerade",
            [
                v4,
                match(
                    payload("ip", "saddr"),
                    {"prefix": {"addr": str(lan_net.network_address), "len": lan_net.prefixlen}},
                ),
                match(meta("oifname"), wan),
                {"masquerade": None},
            ],
        ),
    ]
    return specs(r)
