"""Shaping in the real kernel, measured with iperf3: plan rates, fairness, staff share."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import pytest

from hub_agent.config import HubConfig
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState, Grant
from lab.netns import UPSTREAM, Client, Lab
from tests.conftest import require_lab
from tests.linux.test_enforce_helpers import grant, lab_config, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

N = 10
BASE_PORT = 5201
DOWN_KBIT, UP_KBIT = 10_000, 5_000  # the lab "uplink"
SECONDS = 4


@pytest.fixture(scope="module")
def shaped() -> Iterator[Lab]:
    require_lab()
    with Lab.create(clients=N, nat=False, http=False, dns=False) as built:
        for i in range(N):
            built.spawn(
                built.upstream_ns, "iperf3", "-s", "-p", str(BASE_PORT + i), log=f"iperf{i}.log"
            )
        for i in range(N):
            built.wait_port(built.upstream_ns, UPSTREAM, BASE_PORT + i)
        yield built


def _config(lab: Lab, staff: list[str] | None = None) -> HubConfig:
    net = lab_config(lab).network.model_dump(mode="json")
    net["wan"].update(down_kbit=DOWN_KBIT, up_kbit=UP_KBIT)
    return lab_config(
        lab,
        network=net,
        staff={"guaranteed_share_pct": 40, "devices": [{"mac": m} for m in staff or []]},
    )


def _iperf(c: Client, port: int, reverse: bool, omit: int = 0) -> subprocess.Popen[str]:
    cmd = [
        "ip",
        "netns",
        "exec",
        c.ns,
        "iperf3",
        "-c",
        UPSTREAM,
        "-p",
        str(port),
        "-t",
        str(SECONDS),
        "-J",
    ]
    if reverse:
        cmd.append("-R")  # upstream sends: the device's download
    if omit:
        cmd += ["-O", str(omit)]  # a steady window: slow start left out
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kbit(p: subprocess.Popen[str]) -> float:
    out, err = p.communicate(timeout=SECONDS + 25)
    assert p.returncode == 0, err or out[-500:]
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1000


def _run(clients: list[Client], reverse: bool, omit: int = 0) -> list[float]:
    procs = [_iperf(c, BASE_PORT + i, reverse, omit) for i, c in enumerate(clients)]
    return [_kbit(p) for p in procs]


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def test_plan_rates_down_and_up(shaped: Lab) -> None:
    c1 = shaped.clients[0]
    enf = Enforcer(_config(shaped), netns=shaped.hub_ns)
    try:
        enf.reconcile(DesiredState(grants=(grant(c1, down=2000, up=1000),)))
        (down,) = _run([c1], reverse=True)
        (up,) = _run([c1], reverse=False)
        print(f"2000/1000 plan: down {down:.0f} kbit/s, up {up:.0f} kbit/s")
        # iperf3 reports TCP goodput; HTB counts whole frames (~4% headers)
        assert 2000 * 0.9 <= down <= 2000 * 1.1, down
        assert 1000 * 0.9 <= up <= 1000 * 1.1, up
        # the plan is a ceiling, not a pipe: a faster plan gets more
        enf.authorize(grant(c1, down=4000, up=1000))
        (down,) = _run([c1], reverse=True)
        assert 4000 * 0.9 <= down <= 4000 * 1.1, down
        # with no address known (no tc address filter), the firewall's priority still
        # puts the device's download in its class
        enf.authorize(Grant(c1.mac, None, 2000, 1000))
        (down,) = _run([c1], reverse=True)
        assert 2000 * 0.9 <= down <= 2000 * 1.1, down
    finally:
        enf.close()


def test_ten_saturating_clients_share_fairly(shaped: Lab) -> None:
    enf = Enforcer(_config(shaped), netns=shaped.hub_ns)
    try:
        enf.reconcile(
            DesiredState(grants=tuple(grant(c, down=4000, up=4000) for c in shaped.clients))
        )
        rates = _run(shaped.clients, reverse=True)
        print(f"10 clients: Jain {jain(rates):.3f}, sum {sum(rates):.0f} kbit/s, {rates}")
        assert jain(rates) >= 0.95, rates
        # idle staff capacity is borrowed: together they use (nearly) the whole uplink
        assert sum(rates) >= DOWN_KBIT * 0.85, rates
    finally:
        enf.close()


def test_staff_keeps_guaranteed_share(shaped: Lab) -> None:
    staff_dev = shaped.clients[-1]
    enf = Enforcer(_config(shaped, staff=[staff_dev.mac]), netns=shaped.hub_ns)
    try:
        grants = [grant(c, down=DOWN_KBIT, up=UP_KBIT) for c in shaped.clients[:-1]]
        # no address known for it (discovery has not seen it yet): nft classifies staff
        # by MAC both ways, so the guarantee holds from the first packet, no restart
        grants.append(Grant(staff_dev.mac, None, DOWN_KBIT, UP_KBIT, staff=True))
        enf.reconcile(DesiredState(grants=tuple(grants)))
        rates = _run(shaped.clients, reverse=True)
        guaranteed = DOWN_KBIT * 40 / 100
        print(f"staff {rates[-1]:.0f} kbit/s (guaranteed {guaranteed:.0f}), others {rates[:-1]}")
        assert rates[-1] >= guaranteed * 0.9, rates  # 40% of the uplink, minus headers
        # the community still gets its own guaranteed rest, not starved either
        assert sum(rates[:-1]) >= (DOWN_KBIT - guaranteed) * 0.85, rates
        ups = _run(shaped.clients, reverse=False)
        assert ups[-1] >= UP_KBIT * 40 / 100 * 0.9, ups
    finally:
        enf.close()


def _kernel_has(kind: str, lab: Lab) -> bool:
    probe = ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "9:", kind]
    ok = lab.hub_exec(*probe).returncode == 0
    lab.hub_exec("tc", "qdisc", "del", "dev", "lo", "root")
    return ok


class AccountingPass(threading.Thread):
    """What the agent does every 2 s (daemon.account_once): read the counters, re-set
    the guarantees. The test's own thread only waits on iperf meanwhile."""

    def __init__(self, enf: Enforcer) -> None:
        super().__init__(daemon=True)
        self.enf = enf
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(2.0):
            self.enf.counters()
            self.enf.rebalance()


@pytest.mark.parametrize("leaf", ["pfifo", "fq_codel"])
def test_three_devices_share_fairly_on_every_trial(
    shaped: Lab, leaf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: three devices on one plan behind a 3000 kbit/s WAN, a staff device
    configured but idle; before, one device got 100-230 kbit/s in about half the trials.
    Every trial must be fair, not the mean."""
    if not _kernel_has(leaf, shaped):
        pytest.skip(f"this kernel has no {leaf} qdisc (no loadable modules here)")
    monkeypatch.setenv("RELAIS_TC_LEAF", leaf)
    net = lab_config(shaped).network.model_dump(mode="json")
    net["wan"].update(down_kbit=3000, up_kbit=2000)
    idle_staff = shaped.clients[-1]
    cfg = lab_config(
        shaped,
        network=net,
        staff={"guaranteed_share_pct": 40, "devices": [{"mac": idle_staff.mac}]},
    )
    enf = Enforcer(cfg, netns=shaped.hub_ns)
    devices = shaped.clients[:3]
    passes = AccountingPass(enf)
    try:
        enf.reconcile(DesiredState(grants=tuple(grant(c, down=2000, up=1000) for c in devices)))
        assert enf.tc is not None and enf.tc.leaf_kind == leaf
        passes.start()
        # the idle staff's share goes to the community within a pass or two
        assert wait_until(lambda: not enf.shares.staff_busy, timeout=15)
        worst = 1.0
        for trial in range(10):
            rates = _run(devices, reverse=True, omit=1)
            print(f"trial {trial}: Jain {jain(rates):.3f} {[round(r) for r in rates]}")
            worst = min(worst, jain(rates))
            assert jain(rates) >= 0.95, (trial, rates)
        print(f"three devices, {leaf} leaves: minimum Jain over 10 trials {worst:.3f}")
    finally:
        passes.stop.set()
        passes.join(10)
        enf.close()
