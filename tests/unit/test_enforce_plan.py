"""The pure planners: nft transaction, per-device commands, slots, tc tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub_agent.config import load_config, validate_config
from hub_agent.enforce import nft_plan, nft_view, tc_plan
from hub_agent.enforce.enforcer import validate_grant
from hub_agent.enforce.model import DesiredState, Grant

ROOT = Path(__file__).resolve().parents[2]
A = Grant("02:00:00:00:00:aa", "10.42.0.101", 2000, 1000, quota_bytes=5_000_000, timeout_s=60)
B = Grant("02:00:00:00:00:bb", None, 4000, 1000, ip6=("fd42::bb",))


@pytest.fixture
def config():
    data = load_config(ROOT / "examples" / "hub.yaml", env={}).to_wire()
    data["walled_garden"] = {
        "domains": ["service-public.gouv.tg"],
        "cidrs": ["198.51.100.30/32", "2001:db8:9::/48"],
    }
    return validate_config(data)


def _cmds(doc: dict[str, Any], verb: str, kind: str) -> list[Any]:
    return [c[verb][kind] for c in doc["nftables"] if verb in c and kind in c[verb]]


def test_render_touches_only_our_table(config) -> None:
    doc = nft_plan.render_ruleset(config, DesiredState(grants=(A, B)))
    tables = {
        (c[v]["table"]["family"], c[v]["table"]["name"])
        for c in doc["nftables"]
        for v in c
        if "table" in c[v]
    }
    assert tables == {("inet", "relais")}
    # flush + recreate: add, delete, add of the table first, in one document
    assert [next(iter(c)) for c in doc["nftables"][:3]] == ["add", "delete", "add"]
    for c in doc["nftables"][3:]:
        body = next(iter(next(iter(c.values())).values()))
        assert body.get("table") == "relais"


def test_render_devices_and_static_sets(config) -> None:
    doc = nft_plan.render_ruleset(
        config, DesiredState(grants=(A, B), blocked_macs=frozenset({"02:00:00:00:00:cc"}))
    )
    view = nft_view.view_of(doc)
    assert set(view.devices) == {A.mac, B.mac}
    _slot_a, auth_a, quota_a = view.devices[A.mac]
    assert quota_a == 5_000_000 and "auth4:02:00:00:00:00:aa . 10.42.0.101" in auth_a
    assert "auth4m:02:00:00:00:00:bb" in view.devices[B.mac][1]  # no IPv4 known: by MAC
    assert view.devices[B.mac][2] is None  # unlimited: no quota object
    assert view.static_elems["blocked"] == frozenset({"02:00:00:00:00:cc"})
    assert view.static_elems["staff"] == frozenset({"02:00:5e:10:00:01"})
    assert view.static_elems["wgnet6"] == frozenset({"2001:db8:9::/48"})
    # counters are per-element (slot) in sets, never named objects: adding an element makes
    # nft load every named object, so the only per-device object is the quota
    assert not _cmds(doc, "add", "counter")
    counted = [
        e for el in _cmds(doc, "add", "element") if el["name"] == "cnt_up" for e in el["elem"]
    ]
    assert sorted(counted) == sorted(view.devices[m][0] for m in (A.mac, B.mac))
    (q,) = _cmds(doc, "add", "quota")
    assert q["bytes"] == 5_000_000 and q["inv"] is True
    timed = [e for el in _cmds(doc, "add", "element") if el["name"] == "auth4" for e in el["elem"]]
    assert timed == [{"elem": {"val": {"concat": [A.mac, A.ip]}, "timeout": 60}}]


def test_portal_redirect_and_isolation_rules(config) -> None:
    rules = {(r.chain, r.comment): r for r in nft_plan.rules(config)}
    redirect = rules[("nat_pre", "portal-redirect")].expr
    assert {"redirect": {"port": config.portal.http_port}} in redirect
    assert ("from_lan", "isolation") in rules
    iso_off = config.model_copy(
        update={
            "network": config.network.model_copy(
                update={"lan": config.network.lan.model_copy(update={"client_isolation": False})}
            )
        }
    )
    assert ("from_lan", "isolation") not in {(r.chain, r.comment) for r in nft_plan.rules(iso_off)}
    # the hub only admits portal/content ports from the LAN
    portal = rules[("lan_in", "portal")].expr[0]["match"]["right"]["set"]
    assert portal == nft_plan.portal_ports(config) == [8080, 8081]


def test_diff_finds_devices_and_skeleton_changes(config) -> None:
    full = nft_view.view_of(nft_plan.render_ruleset(config, DesiredState(grants=(A, B))))
    less = nft_view.view_of(nft_plan.render_ruleset(config, DesiredState(grants=(A,))))
    d = nft_view.diff_views(full, less)
    assert d.skeleton_ok and d.missing == (B.mac,) and not d.extra
    assert nft_view.diff_views(full, full).equal
    topped = nft_view.view_of(
        nft_plan.render_ruleset(
            config, DesiredState(grants=(Grant(**{**A.__dict__, "quota_bytes": 1}), B))
        )
    )
    assert nft_view.diff_views(full, topped).changed == (A.mac,)


def test_slots_stable_and_unique() -> None:
    macs = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(3000)]
    slots = nft_plan.assign_slots(macs)
    assert len(set(slots.values())) == 3000
    assert all(nft_plan.SLOT_MIN <= s <= nft_plan.SLOT_MAX for s in slots.values())
    # existing assignments win; new MACs avoid them
    again = nft_plan.assign_slots([*macs, "02:aa:00:00:00:01"], slots)
    assert all(again[m] == slots[m] for m in macs)
    assert again["02:aa:00:00:00:01"] not in set(slots.values())


def test_device_remove_is_idempotent_by_construction() -> None:
    dev = nft_plan.LiveDevice(A.mac, 300, nft_plan.auth_elements(A), has_quota=True)
    cmds = nft_plan.device_remove(dev)
    verbs = [next(iter(c)) for c in cmds]
    # every delete is preceded by an add of the same thing, objects outlive elements
    for i, c in enumerate(cmds):
        if "delete" in c:
            assert {"add": c["delete"]} in cmds[:i]
    assert verbs[-1] == "delete" and "quota" in cmds[-1]["delete"]
    deleted = {c["delete"]["element"]["name"] for c in cmds if "element" in c.get("delete", {})}
    assert {"cnt_up", "cnt_dn", "slot_of", "zslot_of", "quota_of"} <= deleted
    kept = nft_plan.device_remove(dev, keep_counters=True)
    kept_deleted = {
        c["delete"]["element"]["name"] for c in kept if "element" in c.get("delete", {})
    }
    assert not kept_deleted & {"cnt_up", "cnt_dn", "slot_of"}


def test_tc_plan_shares_and_per_device_classes(config) -> None:
    slots = nft_plan.assign_slots([A.mac, B.mac])
    plan = tc_plan.render_tc(config, DesiredState(grants=(A, B)), slots, active=2)
    down = {c.classid: c for c in plan.down.classes}
    wan = config.network.wan
    assert down[tc_plan.UPLINK].rate_kbit == wan.down_kbit
    staff = down[tc_plan.STAFF]
    assert staff.rate_kbit == wan.down_kbit * config.staff_share_pct // 100
    assert staff.ceil_kbit == wan.down_kbit
    assert down[tc_plan.COMMUNITY].rate_kbit == wan.down_kbit - staff.rate_kbit
    a = down[slots[A.mac] | tc_plan.ROOT]
    assert (a.ceil_kbit, a.parent) == (2000, tc_plan.COMMUNITY)
    b = down[slots[B.mac] | tc_plan.ROOT]
    # busy devices are each guaranteed an equal part of the community (HTB's guarantee,
    # not the luck of borrowing), capped by their plan
    fair = tc_plan.fair_kbit(down[tc_plan.COMMUNITY].rate_kbit, 2)
    assert a.rate_kbit == min(fair, 2000) and b.rate_kbit == min(fair, b.ceil_kbit)
    assert a.quantum == b.quantum == tc_plan.QUANTUM
    assert 10 <= a.leaf_limit < 100  # ~100 ms at the ceiling, not 1,000 packets
    # the staff's downloads are classified by nft (connection mark), not by address
    up = {c.classid: c for c in plan.up.classes}
    assert up[slots[A.mac] | tc_plan.ROOT].ceil_kbit == 1000
    assert plan.up.dev == "wan0" and plan.down.dev == "lan0"
    assert plan.up.filters == ()  # upload is classified by nft (skb priority)
    # devices are classified by nft too: only the fixed local and staff filters exist, so a
    # login adds classes and never lengthens tc's filter list
    assert {f.prio for f in plan.down.filters} == {tc_plan.PRIO_LOCAL}
    rules = {(r.chain, r.comment): r.expr for r in nft_plan.rules(config)}
    assert "@prio_dn" in str(rules[("to_lan", "download-class")])
    assert str(nft_plan.STAFF_CT) in str(rules[("to_lan", "staff")])
    assert "@zslot_of" in str(rules[("authed", "zero-net4")])  # zero-rated keeps its class


def test_tc_ip_keys() -> None:
    assert tc_plan.ip_keys("10.42.0.101", dst=True) == (
        "0x40000000/0xf0000000+0",
        "0x0a2a0065/0xffffffff+16",
    )
    assert tc_plan.ip_keys("10.42.0.101", dst=False)[1].endswith("+12")
    v6 = tc_plan.ip_keys("fd42::1", dst=True)
    assert (
        len(v6) == 5 and v6[1] == "0xfd420000/0xffffffff+24" and v6[4] == "0x00000001/0xffffffff+36"
    )


@pytest.mark.parametrize(
    ("grant", "field"),
    [
        (Grant("zz", None, 1, 1), "grant.mac"),
        (Grant("02:00:00:00:00:01", "1.2.3", 1, 1), "grant.ip"),
        (Grant("02:00:00:00:00:01", None, 0, 1), "grant.down_kbit"),
        (Grant("02:00:00:00:00:01", None, 1, 10**9), "grant.up_kbit"),
        (Grant("02:00:00:00:00:01", None, 1, 1, timeout_s=0), "grant.timeout_s"),
    ],
)
def test_validate_grant_names_field(grant: Grant, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate_grant(grant)


def test_validate_grant_normalises() -> None:
    g = validate_grant(Grant("02-00-00-00-00-AA", "10.42.0.5", 1, 1, ip6=("FD42::0001",)))
    assert (g.mac, g.ip6) == ("02:00:00:00:00:aa", ("fd42::1",))


def test_fair_share_follows_active_devices() -> None:
    assert tc_plan.fair_kbit(3000, 3) == 1000
    assert tc_plan.fair_kbit(3000, 0) == 3000  # nobody active: the first gets it all
    assert tc_plan.fair_kbit(3000, 10_000) == tc_plan.MIN_RATE_KBIT


def test_rebalance_follows_the_active_devices(config) -> None:
    from hub_agent.enforce.enforcer import Enforcer

    enf = Enforcer(config, dry_run=True)
    grants = tuple(
        Grant(f"02:00:00:00:00:{i:02x}", f"10.42.0.{100 + i}", 2000, 1000) for i in range(4)
    )
    enf.reconcile(DesiredState(grants=grants))
    assert enf.shares.active == 4  # before any measurement: everyone is assumed busy
    assert enf.tc is not None
    enf.tc.applied.clear()
    enf.shares.seen([grants[0].mac], now=100.0)
    enf.shares.staff_counter(0, now=100.0)
    assert enf.rebalance(now=100.0)  # one busy device: it is guaranteed the whole share
    community = tc_plan.community_kbit(config, down=True, staff_busy=False)
    slot0 = enf._slots[grants[0].mac] | tc_plan.ROOT
    rates = [r["rate"] for v, r in enf.tc.applied if v == "replace-class" and r["handle"] == slot0]
    # down, then up (its ceiling), each only if its guarantee moved (before: 4 active)
    assert rates == [f"{min(2000, community)}kbit", "1000kbit"][-len(rates) :]
    assert rates and rates[-1] == "1000kbit"
    assert not enf.rebalance(now=101.0)  # nothing moved: no kernel work
    enf.shares.seen([g.mac for g in grants], now=102.0)
    assert enf.rebalance(now=102.0) and enf.shares.active == 4
    assert not enf.guarantees_due


def test_rebalance_sets_only_changed_classes_a_few_at_a_time(config) -> None:
    from hub_agent.enforce.enforcer import Enforcer

    enf = Enforcer(config, dry_run=True)
    grants = tuple(
        Grant(f"02:00:00:00:00:{i:02x}", f"10.42.0.{100 + i}", 10**6, 10**6) for i in range(6)
    )
    enf.reconcile(DesiredState(grants=grants))
    assert enf.tc is not None and enf.shares.active == 6
    plan = enf._tc_plan
    assert plan is not None and tc_plan.changed_guarantees(tc_plan.applied_of(plan), plan) == []
    enf.tc.applied.clear()
    enf.shares.seen([grants[0].mac], now=100.0)
    enf.shares.staff_counter(0, now=100.0)
    enf.rebalance(now=100.0, limit=4)  # 6 devices' classes on 2 sides, staff, community
    assert len(enf.tc.applied) == 4 and enf.guarantees_due
    slot5 = enf._slots[grants[5].mac] | tc_plan.ROOT
    enf.deauthorize(grants[5].mac)  # left between two chunks: its class is not re-created
    cut = len(enf.tc.applied)
    while enf.guarantees_due:
        enf.rebalance(now=100.5, limit=4)
    later = [r["handle"] for v, r in enf.tc.applied[cut:] if v == "replace-class"]
    assert later and slot5 not in later
    assert all(c.classid != slot5 for _, c in enf._tc_applied.items())
    final = enf._render_tc(enf._state())
    assert tc_plan.changed_guarantees(enf._tc_applied, final) == []


def test_staff_guarantee_is_held_while_they_are_busy() -> None:
    from hub_agent.enforce.shares import STAFF_WINDOW_S, Shares

    sh = Shares()
    sh.assume(devices=3, staff_present=True)
    assert (sh.active, sh.staff_busy) == (3, True)
    sh.staff_counter(10, now=0.0)  # first read: no claim
    sh.seen(["a"], now=0.0)
    assert sh.want(0.0, staff_present=True) == (1, False)  # idle staff: share released
    sh.active, sh.staff_busy = 1, False
    sh.staff_counter(25, now=1.0)  # a staff packet since: reserve it again
    assert sh.want(1.0, staff_present=True) == (1, True)
    sh.active, sh.staff_busy = 1, True
    sh.staff_counter(25, now=1.0 + STAFF_WINDOW_S + 1)
    assert sh.want(1.0 + STAFF_WINDOW_S + 1, staff_present=True) == (1, False)
    assert sh.want(5.0, staff_present=False) is not None  # no staff device at all
