"""The change planner: what a pushed config makes a running hub redo, from (old, new)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from hub_agent.config import HubConfig, validate_config
from hub_agent.config_changes import LanMove, plan_changes, radius_step
from hub_agent.content.service import listen_addresses
from hub_agent.enforce.dnsmasq import captive_api_url, render_dnsmasq
from hub_agent.enforce.model import DesiredState
from hub_agent.enforce.nft_plan import render_ruleset, rule_name, rules
from hub_agent.enforce.nft_view import diff_views, view_of
from hub_agent.lan_devices import hub_addresses
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService
from hub_agent.store import open_db

UP = ["198.51.100.1"]
RADIUS = {
    "primary": {"address": "192.0.2.10", "secret": "s3cret-one"},
    "coa_port": 3799,
}


def cfg(version: int = 1, **extra: Any) -> HubConfig:
    d: dict[str, Any] = {
        "version": version,
        "hub": {"id": "hub-a", "kind": "clinic", "name": "Clinique"},
        "data_dir": "/tmp/relais-test",
        "plans": [{"id": "heure", "name": {"fr": "Heure"}, "down_kbit": 1000, "up_kbit": 500}],
    }
    d.update(extra)
    return validate_config(d)


def lan(address: str, start: str, end: str) -> dict[str, Any]:
    return {"lan": {"address": address, "dhcp_start": start, "dhcp_end": end}}


def test_same_config_changes_nothing() -> None:
    c = plan_changes(cfg(1), cfg(2), UP, UP)
    assert (c.lan_move, c.dnsmasq, c.portal_listen, c.radius, c.restart_needed) == (
        None,
        False,
        (),
        None,
        (),
    )


def test_a_portal_port_restarts_dnsmasq_for_option_114_and_moves_the_portal() -> None:
    old, new = cfg(1), cfg(2, portal={"http_port": 8090})
    c = plan_changes(old, new, UP, UP)
    assert c.dnsmasq and c.portal_listen == ("portal.http_port",) and c.lan_move is None
    assert captive_api_url(new) == "http://10.42.0.1:8090/api/captive"
    assert captive_api_url(new) in render_dnsmasq(new, UP)


def test_a_lan_address_moves_the_interface_dnsmasq_and_the_portal() -> None:
    new = cfg(2, network=lan("10.43.0.1/24", "10.43.0.100", "10.43.0.200"))
    c = plan_changes(cfg(1), new, UP, UP)
    assert c.lan_move == LanMove(
        "lan0", ipaddress.IPv4Interface("10.42.0.1/24"), ipaddress.IPv4Interface("10.43.0.1/24")
    )
    assert c.dnsmasq and c.portal_listen == ("network.lan.address",)
    text = render_dnsmasq(new, UP)
    assert "dhcp-option=option:router,10.43.0.1" in text
    assert "http://10.43.0.1:8080/api/captive" in text


def test_only_dhcp_or_upstream_changes_restart_dnsmasq_alone() -> None:
    wider = cfg(2, network=lan("10.42.0.1/24", "10.42.0.50", "10.42.0.250"))
    c = plan_changes(cfg(1), wider, UP, UP)
    assert c.dnsmasq and not c.portal_listen and c.lan_move is None
    c = plan_changes(cfg(1), cfg(2), UP, ["192.0.2.53"])
    assert c.dnsmasq and not c.portal_listen


def test_renamed_interfaces_socket_or_data_dir_need_a_restart() -> None:
    new = cfg(
        2,
        network={"lan": {"interface": "br-lan"}, "wan": {"interface": "eth1"}},
        data_dir="/srv/relais",
    )
    c = plan_changes(cfg(1), new, UP, UP)
    assert c.restart_needed == ("network.lan.interface", "network.wan.interface", "data_dir")
    assert c.lan_move is None  # another interface: not moved live


@pytest.mark.parametrize(
    ("old", "new", "step"),
    [
        (None, None, None),
        (None, RADIUS, "start"),
        (RADIUS, None, "stop"),
        (RADIUS, RADIUS, None),
        (RADIUS, {**RADIUS, "coa_port": 3800}, "rebind"),
        (RADIUS, {**RADIUS, "coa_listen": "10.42.0.1"}, "rebind"),
        (RADIUS, {**RADIUS, "coa_port": None}, "rebind"),  # the listener closes
        (
            RADIUS,
            {**RADIUS, "primary": {"address": "192.0.2.20", "secret": "s3cret-two"}},
            "update",
        ),
        (
            RADIUS,
            {**RADIUS, "secondary": {"address": "192.0.2.11", "secret": "s3cret-2b"}},
            "update",
        ),
    ],
)
def test_radius_step(old: Any, new: Any, step: str | None) -> None:
    a = cfg(1) if old is None else cfg(1, radius=old)
    b = cfg(2) if new is None else cfg(2, radius=new)
    assert radius_step(a, b) == step
    assert plan_changes(a, b, UP, UP).radius == step


def test_new_plans_reach_the_coa_listener() -> None:
    plans = [{"id": "jour", "name": {"fr": "Jour"}, "down_kbit": 2000, "up_kbit": 500}]
    assert radius_step(cfg(1, radius=RADIUS), cfg(2, radius=RADIUS, plans=plans)) == "update"
    assert radius_step(cfg(1), cfg(2, plans=plans)) is None


def test_a_new_portal_port_makes_the_live_table_differ_from_the_plan() -> None:
    """Tables are compared by rule comment; the comment carries a digest of the rule's body,
    so a redirect to another port is a table to reload (before, the old port stayed)."""
    empty = DesiredState(grants=(), blocked_macs=frozenset())
    old, new = cfg(1), cfg(2, portal={"http_port": 8090})
    live = render_ruleset(old, empty, {})
    assert diff_views(view_of(render_ruleset(old, empty, {})), view_of(live)).equal
    diff = diff_views(view_of(render_ruleset(new, empty, {})), view_of(live))
    assert not diff.skeleton_ok
    changed = {(a.chain, a.comment) for a, b in zip(rules(old), rules(new), strict=True) if a != b}
    assert ("nat_pre", "portal-redirect") in changed
    tags = {r.tagged for r in rules(new)} - {r.tagged for r in rules(old)}
    assert {rule_name(t) for t in tags} == {name for _, name in changed}


def test_a_renumbered_lan_forgets_the_old_subnets_addresses(tmp_path: Path) -> None:
    config = cfg(1, data_dir=str(tmp_path))
    sessions = SessionService(config, open_db(tmp_path / "hub.db", SESSIONS))
    macs = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"]
    for mac, ip in zip(macs, ["10.42.0.101", "10.43.0.7", "10.43.0.9"], strict=True):
        sessions.seen(mac, ip, 1.0)
    # a phone asking the portal over IPv6 keeps its IPv4 address (nft pairs it with the MAC)
    sessions.seen(macs[2], "fd42::5", 2.0)
    sessions.forget_addresses_outside(ipaddress.IPv4Network("10.43.0.0/24"))
    ips = dict(sessions.conn.execute("SELECT mac, ip FROM devices").fetchall())
    assert ips == {macs[0]: None, macs[1]: "10.43.0.7", macs[2]: "10.43.0.9"}


V4 = ipaddress.IPv4Interface("10.42.0.1/24")


def lan6(address6: str | None) -> dict[str, Any]:
    return {"lan": {"address6": address6}}


@pytest.mark.parametrize(
    ("old", "new"),
    [(None, "fd42::1/64"), ("fd42::1/64", None), ("fd42::1/64", "fd43::1/64")],
)
def test_an_ipv6_lan_address_added_removed_or_changed_moves_the_interface_and_dnsmasq(
    old: str | None, new: str | None
) -> None:
    a, b = cfg(1, network=lan6(old)), cfg(2, network=lan6(new))
    c = plan_changes(a, b, UP, UP)
    six = [None if x is None else ipaddress.IPv6Interface(x) for x in (old, new)]
    assert c.lan_move == LanMove("lan0", V4, V4, six[0], six[1])
    assert c.lan_move.moves6 and not c.lan_move.moves4 and not c.lan_move.reprefixes6
    assert c.dnsmasq and c.restart_needed == ()
    # the portal listens on the IPv6 address too: it moves, and the agent waits for its word
    assert c.portal_listen == ("network.lan.address6",)
    text = render_dnsmasq(b, UP)
    for x in (old, new):
        if x is not None:
            prefix = ipaddress.IPv6Interface(x).network.network_address
            assert (f"dhcp-range={prefix},ra-stateless" in text) == (x == new)


def test_both_families_move_together_and_an_unchanged_ipv6_address_stays() -> None:
    v4 = lan("10.43.0.1/24", "10.43.0.100", "10.43.0.200")
    same6 = {"lan": {**v4["lan"], "address6": "fd42::1/64"}}
    c = plan_changes(cfg(1, network=lan6("fd42::1/64")), cfg(2, network=same6), UP, UP)
    assert c.lan_move is not None and c.lan_move.moves4 and not c.lan_move.moves6
    both = {"lan": {**v4["lan"], "address6": "fd43::1/64"}}
    c = plan_changes(cfg(1, network=lan6("fd42::1/64")), cfg(2, network=both), UP, UP)
    assert c.lan_move is not None and c.lan_move.moves4 and c.lan_move.moves6
    assert c.lan_move.new6 == ipaddress.IPv6Interface("fd43::1/64")


def test_an_ipv6_address_with_another_prefix_is_a_reprefix() -> None:
    c = plan_changes(cfg(1, network=lan6("fd42::1/64")), cfg(2, network=lan6("fd42::1/56")), UP, UP)
    assert c.lan_move is not None and c.lan_move.moves6 and c.lan_move.reprefixes6
    c = plan_changes(cfg(1, network=lan6("fd42::1/64")), cfg(2, network=lan6("fd42::1/64")), UP, UP)
    assert c.lan_move is None


def test_an_ipv6_address_on_a_renamed_interface_is_not_moved_live() -> None:
    new = cfg(2, network={"lan": {"interface": "br-lan", "address6": "fd43::1/64"}})
    c = plan_changes(cfg(1, network=lan6("fd42::1/64")), new, UP, UP)
    assert c.lan_move is None and c.restart_needed == ("network.lan.interface",)


def test_the_content_library_and_the_hub_addresses_follow_the_ipv6_address() -> None:
    """nginx's listen lines and the hub's own addresses (tc's local class, the LAN
    discovery's filter) are rendered from the config, so they follow a move."""
    new = cfg(2, network=lan6("fd43::1/64"))
    assert listen_addresses(new) == ("10.42.0.1:8081", "[fd43::1]:8081")
    assert hub_addresses(new) == frozenset({"10.42.0.1", "fd43::1"})
    assert listen_addresses(cfg(3)) == ("10.42.0.1:8081",)
