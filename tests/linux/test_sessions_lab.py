"""Sessions + enforcement in the netns lab: exact data cut-off, counted bytes, zero-rating,
and kill -9 of the agent without losing or double-counting usage.

The test drives what ``hub-agent run`` does for sessions: login -> grant -> Enforcer,
then every interval Enforcer.counters() -> SessionService.account() -> actions applied.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hub_agent.config import HubConfig
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState
from hub_agent.sessions import loop
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import Action, SessionService
from lab.netns import UPSTREAM, Client, Lab
from tests.linux.test_enforce_helpers import (
    ZERO_RATED_IP,
    lab_config,
    lab_with_portal,
    reaches,
    wait_until,
)

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
QUOTA = 5 * 1000 * 1000
BOUND = max(QUOTA // 100, 256 * 1024)  # the issue's overshoot bound
SECRET = "lab-deployment-voucher-secret-0001"
TICK_S = 0.1


@pytest.fixture(scope="module")
def nolab() -> Iterator[Lab]:
    with lab_with_portal(2) as built:
        yield built


def config(lab: Lab, data_dir: Path) -> HubConfig:
    plan = {
        "id": "lab5",
        "name": {"fr": "5 Mo", "en": "5 MB"},
        "price_label": "50 FCFA",
        "down_kbit": 200_000,
        "up_kbit": 200_000,
        "data_quota_mb": QUOTA // 1_000_000,
        "time_quota_min": 60,
        "idle_timeout_min": 15,
    }
    cfg = lab_config(lab, plans=[plan], trust={"voucher_secret": SECRET})
    data = cfg.to_wire()
    data["data_dir"] = str(data_dir)
    return type(cfg).model_validate(data)


class Agent:
    """The session half of the agent loop, in this process."""

    def __init__(self, cfg: HubConfig, lab: Lab) -> None:
        self.svc = SessionService(cfg, open_sessions_db(cfg.data_dir / "hub.db"))
        self.enf = Enforcer(cfg, netns=lab.hub_ns, shaping=False)
        self.enf.reconcile(DesiredState())  # whatever an earlier test left goes
        loop.start(self.svc, self.enf)

    def login(self, c: Client, code: str) -> None:
        view, err = self.svc.login(c.mac, c.ip, "voucher", code)
        assert err is None and view is not None, err
        grant = self.svc.grant_for(c.mac)
        assert grant is not None
        self.enf.authorize(grant)

    def tick(self) -> list[Action]:
        return loop.tick(self.svc, self.enf)

    def close(self) -> None:
        self.enf.close()
        self.svc.db.conn.close()


def _curl_bg(c: Client, url: str, timeout: float) -> subprocess.Popen[str]:
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-o", "/dev/null", "-w", "%{size_download}"]
    return subprocess.Popen(
        ["ip", "netns", "exec", c.ns, *cmd, url], stdout=subprocess.PIPE, text=True
    )


def _size(p: subprocess.Popen[str]) -> int:
    out, _ = p.communicate(timeout=30)
    return int(float(out.strip() or 0))


def _download_while_ticking(agent: Agent, c: Client, url: str, timeout: float = 8) -> int:
    p = _curl_bg(c, url, timeout)
    while p.poll() is None:
        agent.tick()
        time.sleep(TICK_S)
    agent.tick()
    return _size(p)


def test_five_mb_plan_is_cut_off_exactly_and_counted(nolab: Lab, tmp_path: Path) -> None:
    agent = Agent(config(nolab, tmp_path), nolab)
    try:
        c1 = nolab.clients[0]
        [code] = agent.svc.issue_local_vouchers("lab5", 1)
        agent.login(c1, code)
        # within the quota: counted bytes match what HTTP delivered
        got = _download_while_ticking(agent, c1, f"http://{UPSTREAM}/bytes/2000000")
        assert got == 2_000_000
        view = agent.svc.session_view(c1.mac)
        assert view is not None and view.state == "authorised"
        assert abs(view.bytes_used - got) <= 0.02 * got, (view.bytes_used, got)

        # then past it: the kernel cuts at the quota, the session ends with data_quota
        got2 = _download_while_ticking(agent, c1, f"http://{UPSTREAM}/bytes/20000000")
        for _ in range(3):
            agent.tick()
        view = agent.svc.session_view(c1.mac)
        assert view is not None
        assert (view.state, view.ended_reason) == ("expired", "data_quota")
        assert QUOTA * 0.9 <= got + got2 <= QUOTA + BOUND, got + got2
        assert QUOTA - BOUND <= view.bytes_used <= QUOTA + BOUND, view.bytes_used
        assert not reaches(c1, f"http://{UPSTREAM}/")
        assert agent.svc.login(c1.mac, c1.ip, "voucher", code) == (None, "used_up")
    finally:
        agent.close()


def test_zero_rated_downloads_leave_the_counter_unchanged(nolab: Lab, tmp_path: Path) -> None:
    agent = Agent(config(nolab, tmp_path), nolab)
    try:
        c2 = nolab.clients[1]
        [code] = agent.svc.issue_local_vouchers("lab5", 1)
        agent.login(c2, code)
        agent.tick()
        before = agent.svc.session_view(c2.mac)
        assert before is not None
        # 8 MB from the zero-rated destination: beyond the 5 MB quota, and free
        got = _download_while_ticking(agent, c2, f"http://{ZERO_RATED_IP}/bytes/8000000")
        assert got == 8_000_000
        after = agent.svc.session_view(c2.mac)
        assert after is not None and after.state == "authorised"
        assert after.bytes_used == before.bytes_used
        got = _download_while_ticking(agent, c2, f"http://{UPSTREAM}/bytes/500000")
        counted = agent.svc.session_view(c2.mac)
        assert counted is not None
        assert abs(counted.bytes_used - before.bytes_used - got) <= 0.02 * got
    finally:
        agent.close()


AGENT = """
import sys, time
from hub_agent.config import load_config
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.sessions import loop
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService

cfg = load_config(sys.argv[1], env={})
svc = SessionService(cfg, open_sessions_db(cfg.data_dir / "hub.db"))
enf = Enforcer(cfg, netns=sys.argv[2], shaping=False)
lost = loop.start(svc, enf)
print("ready", len(lost), flush=True)
while True:  # the accounting part of the daemon's pass, nothing else
    loop.tick(svc, enf)
    time.sleep(float(sys.argv[3]))
"""


def _spawn_agent(cfg_path: Path, lab: Lab) -> tuple[subprocess.Popen[str], int]:
    """The agent process, once started; and how many devices it re-created."""
    p = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(cfg_path), lab.hub_ns, str(TICK_S)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("ready "), line
    return p, int(line.split()[1])


def _kill9(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait()
    if p.stdout is not None:
        p.stdout.close()


def test_kill_9_and_restart_keep_usage_and_enforcement(nolab: Lab, tmp_path: Path) -> None:
    cfg = config(nolab, tmp_path)
    cfg_path = tmp_path / "hub.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_wire()))
    setup = Agent(cfg, nolab)  # a clean table, the login, then the agent process takes over
    c1 = nolab.clients[0]
    [code] = setup.svc.issue_local_vouchers("lab5", 1)
    setup.login(c1, code)
    setup.close()

    agent, _ = _spawn_agent(cfg_path, nolab)
    try:
        p = _curl_bg(c1, f"http://{UPSTREAM}/bytes/2500000", 8)
        time.sleep(0.3)
        _kill9(agent)  # mid-download, mid-loop
        first = _size(p)
        assert first == 2_500_000
        agent, lost = _spawn_agent(cfg_path, nolab)  # restart: the kernel kept the device
        assert lost == 0
        svc = SessionService(cfg, open_sessions_db(cfg.data_dir / "hub.db"))

        def used() -> int:
            v = svc.session_view(c1.mac)
            return v.bytes_used if v is not None else 0

        assert wait_until(lambda: used() >= first, timeout=10)
        time.sleep(5 * TICK_S)  # more passes must not add anything
        view = svc.session_view(c1.mac)
        assert view is not None and view.state == "authorised"
        assert abs(view.bytes_used - first) <= 0.02 * first, (view.bytes_used, first)

        _kill9(agent)
        agent, _ = _spawn_agent(cfg_path, nolab)
        # enforcement continues: the rest of the quota, not a fresh one
        second = _size(_curl_bg(c1, f"http://{UPSTREAM}/bytes/20000000", 8))
        assert wait_until(lambda: svc.grant_for(c1.mac) is None, timeout=10)
        assert QUOTA * 0.9 <= first + second <= QUOTA + BOUND, (first, second)
        view = svc.session_view(c1.mac)
        assert view is not None and view.ended_reason == "data_quota"
        assert QUOTA - BOUND <= view.bytes_used <= QUOTA + BOUND, view.bytes_used
        assert not reaches(c1, f"http://{UPSTREAM}/")
        svc.db.conn.close()
    finally:
        _kill9(agent)


def test_reboot_recreates_kernel_state_from_stored_usage(nolab: Lab, tmp_path: Path) -> None:
    cfg = config(nolab, tmp_path)
    cfg_path = tmp_path / "hub.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_wire()))
    setup = Agent(cfg, nolab)
    c1 = nolab.clients[0]
    [code] = setup.svc.issue_local_vouchers("lab5", 1)
    setup.login(c1, code)
    first = _download_while_ticking(setup, c1, f"http://{UPSTREAM}/bytes/3000000")
    assert first == 3_000_000
    setup.close()

    # power cut: the kernel forgets everything (table, counters, quota objects)
    nolab.hub_exec("nft", "delete", "table", "inet", "relais")
    assert not reaches(c1, f"http://{UPSTREAM}/")
    agent, lost = _spawn_agent(cfg_path, nolab)
    try:
        assert lost == 1
        assert reaches(c1, f"http://{UPSTREAM}/")  # the session is back
        # and the quota left is what was left before the cut, not a fresh 5 MB
        second = _size(_curl_bg(c1, f"http://{UPSTREAM}/bytes/20000000", 8))
        assert QUOTA * 0.9 <= first + second <= QUOTA + BOUND, (first, second)
        svc = SessionService(cfg, open_sessions_db(cfg.data_dir / "hub.db"))
        assert wait_until(lambda: svc.grant_for(c1.mac) is None, timeout=10)
        view = svc.session_view(c1.mac)
        assert view is not None and view.ended_reason == "data_quota"
        assert QUOTA - BOUND <= view.bytes_used <= QUOTA + BOUND, view.bytes_used
        svc.db.conn.close()
    finally:
        _kill9(agent)
