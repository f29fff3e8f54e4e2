"""The captive part of the table: how a packet from the LAN is classified (blocked, staff,
authorised, unknown), where an unknown device's web and DNS land (the portal, the hub's
resolver), and what the LAN may reach on the hub itself (chains ``mark_pre``, ``nat_pre``,
``input`` and ``lan_in``)."""

from __future__ import annotations

from hub_agent.config import HubConfig
from hub_agent.enforce.nft_expr import (
    ACCEPT,
    DROP,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    MARK_AUTH,
    MARK_STAFF,
    RETURN,
    TCP_RESET,
    Expr,
    RuleSpec,
    ct,
    jump,
    match,
    meta,
    payload,
    set_mark,
    specs,
)


def portal_ports(config: HubConfig) -> list[int]:
    ports = {config.portal.http_port, config.content.serve_port}
    if config.portal.https_port:
        ports.add(config.portal.https_port)
    return sorted(ports)


def captive_rules(config: HubConfig) -> list[RuleSpec]:
    """Rules of ``mark_pre``, ``nat_pre``, ``input`` and ``lan_in``, in order."""
    lan = config.network.lan.interface
    iif_lan = match(meta("iifname"), lan)
    ether_src = payload("ether", "saddr")
    v4 = match(meta("nfproto"), "ipv4")
    v6 = match(meta("nfproto"), "ipv6")
    local = match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    est = match(ct("state"), ["established", "related"], "in")
    portal = config.portal.http_port

    r: list[tuple[str, str, list[Expr]]] = [
        # mark_pre: classify every packet arriving from the LAN, once.
        ("mark_pre", "only-lan", [match(meta("iifname"), lan, "!="), RETURN]),
        ("mark_pre", "reset-mark", [set_mark(0)]),
        ("mark_pre", "blocked", [match(ether_src, "@blocked"), DROP]),
        ("mark_pre", "staff", [match(ether_src, "@staff"), set_mark(MARK_STAFF), RETURN]),
        (
            "mark_pre",
            "auth4",
            [
                match({"concat": [ether_src, payload("ip", "saddr")]}, "@auth4"),
                set_mark(MARK_AUTH),
                RETURN,
            ],
        ),
        ("mark_pre", "auth4m", [v4, match(ether_src, "@auth4m"), set_mark(MARK_AUTH), RETURN]),
        ("mark_pre", "auth6", [v6, match(ether_src, "@auth6"), set_mark(MARK_AUTH), RETURN]),
        # nat_pre: the captive part, for unauthorised devices only. Port 80 to anywhere but
        # the hub and the walled garden lands on the portal; DNS to any resolver lands on
        # the hub's own (which fills the walled-garden sets).
        ("nat_pre", "only-lan", [match(meta("iifname"), lan, "!="), RETURN]),
        ("nat_pre", "only-unauth", [match(meta("mark"), 0, "!="), RETURN]),
        ("nat_pre", "to-hub", [local, RETURN]),
        ("nat_pre", "walled-net4", [match(payload("ip", "daddr"), "@wgnet4"), RETURN]),
        ("nat_pre", "walled-dns4", [match(payload("ip", "daddr"), "@wg4"), RETURN]),
        ("nat_pre", "walled-net6", [match(payload("ip6", "daddr"), "@wgnet6"), RETURN]),
        ("nat_pre", "walled-dns6", [match(payload("ip6", "daddr"), "@wg6"), RETURN]),
        (
            "nat_pre",
            "portal-redirect",
            [match(payload("tcp", "dport"), 80), {"redirect": {"port": portal}}],
        ),
        ("nat_pre", "dns-redirect-udp", [match(payload("udp", "dport"), 53), {"redirect": {}}]),
        ("nat_pre", "dns-redirect-tcp", [match(payload("tcp", "dport"), 53), {"redirect": {}}]),
        # input: what the LAN may reach on the hub itself.
        ("input", "lan", [iif_lan, jump("lan_in")]),
        ("lan_in", "established", [est, ACCEPT]),
        (
            "lan_in",
            "icmp",
            [match(meta("l4proto"), {"set": [IPPROTO_ICMP, IPPROTO_ICMPV6]}), ACCEPT],
        ),
        (
            "lan_in",
            "dhcp-dns-udp",
            [match(payload("udp", "dport"), {"set": [53, 67, 547]}), ACCEPT],
        ),
        ("lan_in", "dns-tcp", [match(payload("tcp", "dport"), 53), ACCEPT]),
        (
            "lan_in",
            "portal",
            [match(payload("tcp", "dport"), {"set": portal_ports(config)}), ACCEPT],
        ),
        ("lan_in", "tcp-reset", [match(meta("l4proto"), IPPROTO_TCP), TCP_RESET]),
        ("lan_in", "drop", [DROP]),
    ]
    return specs(r)
