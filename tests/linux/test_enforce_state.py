"""Counters, exact quotas, zero-rating, restart/reconcile and input validation, for real."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState, Grant
from lab.netns import UPSTREAM, UPSTREAM6, Lab
from tests.linux.test_enforce_helpers import (
    PORTAL_MARK,
    ZERO_RATED_IP,
    grant,
    lab_config,
    lab_with_portal,
    reaches,
    wait_until,
)

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nolab() -> Iterator[Lab]:
    with lab_with_portal(3) as built:
        yield built


@pytest.fixture
def enf(nolab: Lab) -> Iterator[Enforcer]:
    e = Enforcer(lab_config(nolab), netns=nolab.hub_ns)
    e.reconcile(DesiredState())
    yield e
    e.close()


_UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(200):
    s.sendto(b"x" * 1000, (sys.argv[1], 9))
"""


def _download(c, url: str, timeout: float = 10) -> int:
    r = c.curl(url, "-o", "/dev/null", "-w", "%{size_download}", timeout=timeout)
    return int(float(r.stdout.strip() or 0))


def test_counters_up_and_down_per_device(nolab: Lab, enf: Enforcer) -> None:
    c1, c2 = nolab.clients[0], nolab.clients[1]
    enf.authorize(grant(c1))
    enf.authorize(grant(c2))
    got = _download(c1, f"http://{UPSTREAM}/bytes/300000")
    assert got == 300_000
    # upload: 200 UDP datagrams of 1000 bytes (counted as they are forwarded)
    c1.exec("python3", "-c", _UDP_SEND, UPSTREAM, check=True)
    ctr = enf.counters()
    assert 300_000 <= ctr[c1.mac].down_bytes <= 300_000 * 1.1
    assert 200 * 1028 <= ctr[c1.mac].up_bytes <= 200 * 1028 + 50_000
    assert ctr[c2.mac].down_bytes == 0 and ctr[c2.mac].up_bytes == 0


def test_quota_cuts_off_exactly(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    quota = 5 * 1000 * 1000
    enf.authorize(grant(c1, quota_bytes=quota))
    got = _download(c1, f"http://{UPSTREAM}/bytes/20000000", timeout=6)
    overshoot_bound = max(quota // 100, 256 * 1024)
    ctr = enf.counters()[c1.mac]
    assert ctr.quota_exhausted
    # what the device received and what the kernel let through both stop at the quota
    assert quota * 0.9 <= got <= quota + overshoot_bound
    assert ctr.down_bytes + ctr.up_bytes <= quota + overshoot_bound
    assert not reaches(c1, f"http://{UPSTREAM}/")
    # a fresh grant (the session layer topped up) restores access, counters kept
    enf.authorize(grant(c1, quota_bytes=10_000_000))
    assert reaches(c1, f"http://{UPSTREAM}/")
    assert enf.counters()[c1.mac].down_bytes >= ctr.down_bytes


def test_zero_rated_traffic_is_not_counted(nolab: Lab, enf: Enforcer) -> None:
    # c2: the quota test leaves c1 a stalled download that resumes on any new grant
    c1 = nolab.clients[1]
    enf.authorize(grant(c1, quota_bytes=100_000))
    before = enf.counters()[c1.mac]
    # 1 MB from the zero-rated destination: far beyond the 100 kB quota, not charged
    assert _download(c1, f"http://{ZERO_RATED_IP}/bytes/1000000") == 1_000_000
    after = enf.counters()[c1.mac]
    assert (after.up_bytes, after.down_bytes) == (before.up_bytes, before.down_bytes)
    assert not after.quota_exhausted
    assert after.active  # uncounted, yet the device is busy: not idle
    # once the device falls silent (trailing TCP ACKs and IPv6 ND may still come for a
    # moment), a read with nothing sent since the previous one says so
    assert wait_until(lambda: not enf.counters()[c1.mac].active, timeout=10)
    assert _download(c1, f"http://{UPSTREAM}/bytes/50000") == 50_000
    assert enf.counters()[c1.mac].down_bytes >= 50_000


def test_restart_reconcile_restores_sessions(nolab: Lab) -> None:
    # c3: no earlier test left connections of its own in flight
    c1, c2 = nolab.clients[2], nolab.clients[1]
    cfg = lab_config(nolab)
    state = DesiredState(grants=(grant(c1, quota_bytes=50_000_000, timeout_s=600),))
    first = Enforcer(cfg, netns=nolab.hub_ns)
    first.reconcile(DesiredState())  # start from an empty table
    first.reconcile(state)
    assert _download(c1, f"http://{UPSTREAM}/bytes/100000") == 100_000
    counted = first.counters()[c1.mac].down_bytes
    del first  # the agent dies without cleaning up (kernel state stays)

    second = Enforcer(cfg, netns=nolab.hub_ns)
    try:
        diff = second.reconcile(state)
        assert diff.equal  # nothing to repair: the kernel already holds the sessions
        assert second.kernel_equals_plan()
        assert second.counters()[c1.mac].down_bytes == counted  # accounting survived
        assert reaches(c1, f"http://{UPSTREAM}/")
        assert reaches(c1, f"http://[{UPSTREAM6}]/")
        assert PORTAL_MARK in c2.curl(f"http://{UPSTREAM}/").stdout

        # someone breaks the kernel state: a rule removed and a device's elements deleted
        counted = second.counters()[c1.mac].down_bytes
        nolab.hub_exec("nft", "flush", "chain", "inet", "relais", "to_lan")
        assert not second.kernel_equals_plan()
        third = Enforcer(cfg, netns=nolab.hub_ns)
        diff = third.reconcile(state)
        assert not diff.skeleton_ok
        assert third.kernel_equals_plan()
        assert third.counters()[c1.mac].down_bytes == counted  # carried over the reload
        assert reaches(c1, f"http://{UPSTREAM}/")
        third.close()
    finally:
        second.close()


def test_reconcile_removes_stale_and_adds_missing(nolab: Lab, enf: Enforcer) -> None:
    c1, c2 = nolab.clients[0], nolab.clients[1]
    enf.authorize(grant(c1))
    diff = enf.reconcile(DesiredState(grants=(grant(c2),)))
    assert diff.extra == (c1.mac,) and diff.missing == (c2.mac,)
    assert enf.kernel_equals_plan()
    assert not reaches(c1, f"http://{UPSTREAM}/")
    assert reaches(c2, f"http://{UPSTREAM}/")


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (Grant("02:00:00:00:00:zz", "10.42.0.5", 1000, 1000), "grant.mac"),
        (Grant("01:00:5e:00:00:01", "10.42.0.5", 1000, 1000), "grant.mac"),
        (Grant("02:00:00:00:00:01", "10.42.0.300", 1000, 1000), "grant.ip"),
        (Grant("02:00:00:00:00:01", "10.42.0.5", 0, 1000), "grant.down_kbit"),
        (Grant("02:00:00:00:00:01", "10.42.0.5", 1000, -5), "grant.up_kbit"),
        (Grant("02:00:00:00:00:01", "10.42.0.5", 1000, 1000, ip6=("fd42::zz",)), "grant.ip6"),
        (Grant("02:00:00:00:00:01", "10.42.0.5", 1000, 1000, quota_bytes=-1), "grant.quota_bytes"),
    ],
)
def test_bad_input_refused_before_kernel(nolab: Lab, enf: Enforcer, bad: Grant, field: str) -> None:
    before = json.dumps(enf.nft.list_table()["nftables"][1:])
    with pytest.raises(ValueError, match=field):
        enf.authorize(bad)
    with pytest.raises(ValueError, match=field):
        enf.reconcile(DesiredState(grants=(bad,)))
    assert json.dumps(enf.nft.list_table()["nftables"][1:]) == before


AGENT = """
import json, sys, time
from hub_agent.config import validate_config
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState, Grant
cfg = validate_config(json.loads(sys.argv[1]))
grant = Grant(**json.loads(sys.argv[3]))
enf = Enforcer(cfg, netns=sys.argv[2])
enf.reconcile(DesiredState(grants=(grant,)))
print("ready", flush=True)
time.sleep(120)
"""


def test_kill_9_of_the_agent_then_restart(nolab: Lab) -> None:
    c3, c2 = nolab.clients[2], nolab.clients[1]
    cfg = lab_config(nolab)
    g = grant(c3, down=20_000, up=20_000, quota_bytes=50_000_000)
    Enforcer(cfg, netns=nolab.hub_ns).reconcile(DesiredState())  # nothing authorised
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            AGENT,
            json.dumps(cfg.to_wire()),
            nolab.hub_ns,
            json.dumps(dataclasses.asdict(g)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "ready"
        assert reaches(c3, f"http://{UPSTREAM}/")
    finally:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
    # the kernel keeps enforcing with no agent at all
    assert reaches(c3, f"http://{UPSTREAM}/")
    assert PORTAL_MARK in c2.curl(f"http://{UPSTREAM}/").stdout
    restarted = Enforcer(cfg, netns=nolab.hub_ns)
    try:
        diff = restarted.reconcile(DesiredState(grants=(g,)))
        assert diff.equal, diff
        assert restarted.kernel_equals_plan()
        assert reaches(c3, f"http://{UPSTREAM}/") and reaches(c3, f"http://[{UPSTREAM6}]/")
        assert PORTAL_MARK in c2.curl(f"http://{UPSTREAM}/").stdout
        assert not reaches(c2, f"http://[{UPSTREAM6}]/")
    finally:
        restarted.close()
