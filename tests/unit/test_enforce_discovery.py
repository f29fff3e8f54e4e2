"""Pure discovery logic: merging observations, activity and idle devices."""

from __future__ import annotations

from hub_agent.enforce import discovery
from hub_agent.enforce.discovery import (
    Activity,
    Device,
    Observation,
    idle_macs,
    merge,
    update_activity,
)
from hub_agent.enforce.model import Counters

M = "02:42:aa:bb:cc:01"


def test_merge_combines_sources_newest_ipv4_wins() -> None:
    obs = [
        Observation(M.upper(), 10.0, "dhcp", ip="10.42.0.150", hostname="phone-amy"),
        Observation(M, 30.0, "neigh", ip="10.42.0.160"),
        Observation(M, 20.0, "arp", ip="10.42.0.155"),
        Observation(M, 25.0, "neigh", ip6="fd42::1:2"),
    ]
    devs = merge({}, obs)
    d = devs[M]
    assert (d.ip, d.hostname, d.last_seen) == ("10.42.0.160", "phone-amy", 30.0)
    assert d.ip6 == ("fd42::1:2",)
    assert d.sources == frozenset({"dhcp", "neigh", "arp"})
    # order of arrival does not matter
    assert merge({}, reversed(obs)) == devs


def test_merge_keeps_hostname_and_time_moves_forward() -> None:
    known = {M: Device(M, ip="10.42.0.150", hostname="phone-amy", last_seen=50.0)}
    devs = merge(known, [Observation(M, 40.0, "arp", ip="10.42.0.150", hostname="")])
    assert devs[M].hostname == "phone-amy" and devs[M].last_seen == 50.0


def test_merge_ignores_garbage() -> None:
    devs = merge(
        {},
        [
            Observation("ff:ff:ff:ff:ff:ff", 1.0, "arp", ip="10.42.0.1"),
            Observation("not-a-mac", 1.0, "arp"),
            Observation(M, 1.0, "dhcp", ip="0.0.0.0", hostname="x\x00y"),
        ],
    )
    assert list(devs) == [M]
    assert devs[M].ip is None and devs[M].hostname == "xy"


def test_idle_after_timeout_without_byte_movement() -> None:
    c = {M: Counters(M, 100, 1000), "02:42:aa:bb:cc:02": Counters("02:42:aa:bb:cc:02", 5, 5)}
    act = update_activity({}, c, now=0.0)
    act = update_activity(act, c, now=100.0)  # nothing moved
    assert act[M] == Activity(1100, 0.0)
    moved = dict(c)
    moved[M] = Counters(M, 100, 2000)
    act = update_activity(act, moved, now=200.0)
    assert act[M].since == 200.0
    timeouts = {M: 150.0, "02:42:aa:bb:cc:02": 150.0}
    assert idle_macs(act, timeouts, now=210.0) == ["02:42:aa:bb:cc:02"]
    assert idle_macs(act, timeouts, now=400.0) == [M, "02:42:aa:bb:cc:02"]


def test_leases_name_devices_and_changed_records_only() -> None:
    from hub_agent.enforce.dnsmasq import Lease

    now = 1_780_000_000.0
    leases = [
        Lease(int(now) + 600, "02:00:00:00:00:0a", "10.42.0.120", "phone-amy"),
        Lease(int(now) - 1, "02:00:00:00:00:0b", "10.42.0.121", "gone"),  # expired
    ]
    obs = discovery.lease_observations(leases, now)
    assert [(o.mac, o.hostname, o.seen_at) for o in obs] == [
        ("02:00:00:00:00:0a", "phone-amy", 0.0)
    ]
    before = discovery.merge({}, [discovery.Observation("02:00:00:00:00:0a", now, "neigh")])
    after = discovery.merge(before, obs)
    assert after["02:00:00:00:00:0a"].last_seen == now  # a lease never claims presence
    assert discovery.changed(before, after) == [after["02:00:00:00:00:0a"]]
    assert discovery.changed(after, after) == []
