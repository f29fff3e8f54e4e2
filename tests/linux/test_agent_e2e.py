"""The whole hub for real: `hub-agent run` (root) and `captive-portal` (nobody) in the hub
namespace, a phone in a client namespace, the upstream internet behind the hub's own NAT.

A phone is redirected to the splash page, logs in with a voucher over plain HTTP, reaches
upstream; its neighbour stays captive; kill -9 of the agent changes nothing for either,
and a restarted agent finds the kernel as the database says it should be.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.config import load_config
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService
from hub_agent.store import open_db
from hub_agent.telemetry import db_path
from lab.netns import DNS_QUERY, DOMAINS, HUB_LAN, UPSTREAM, Client, Lab
from lab.users import portal_setpriv
from tests.conftest import require_lab

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORTAL = f"http://{HUB_LAN}:8080"


@dataclass
class Hub:
    lab: Lab
    rundir: Path
    config_path: Path
    agent: subprocess.Popen[bytes]
    portal: subprocess.Popen[bytes]
    voucher: str

    def start_agent(self, *env: str) -> None:
        """Start `hub-agent run`; ``env``: NAME=VALUE pairs for this process only."""
        self.agent = self.lab.spawn(
            self.lab.hub_ns,
            *(("env", *env) if env else ()),
            str(BIN / "hub-agent"),
            "run",
            "--config",
            str(self.config_path),
            log="agent.log",
        )
        sock = self.rundir / "agent.sock"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not sock.exists():
            assert self.agent.poll() is None, self.log("agent.log")
            time.sleep(0.05)
        assert sock.exists(), self.log("agent.log")

    def kill_agent(self) -> None:
        """kill -9, as a power cut does to the process (the kernel state stays)."""
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(5)
        (self.rundir / "agent.sock").unlink(missing_ok=True)

    def log(self, name: str) -> str:
        p = self.lab.workdir / name
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""


def _config(rundir: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "hub.yaml").read_text())
    data["data_dir"] = str(rundir / "data")
    data["portal"]["agent_socket"] = str(rundir / "agent.sock")
    data["staff"]["devices"] = []
    data["mqtt"]["url"] = "mqtt://127.0.0.1:1"  # no broker: telemetry queues in the outbox
    data["network"]["wan"]["dns_servers"] = [UPSTREAM]
    return data


@pytest.fixture
def hub() -> Iterator[Hub]:
    with running_hub() as h:
        yield h


@contextlib.contextmanager
def running_hub(edit: Callable[[Lab, dict[str, Any]], None] | None = None) -> Iterator[Hub]:
    """The hub (agent and portal) in a new lab; ``edit`` changes its config before start."""
    require_lab()
    lab = Lab.create(clients=2, nat=False)  # the agent's own table must do the NAT
    rundir = Path(tempfile.mkdtemp(prefix="relais-e2e-"))
    os.chmod(rundir, 0o755)
    cfg_path = rundir / "hub.yaml"
    data = _config(rundir)
    if edit is not None:
        edit(lab, data)
    cfg_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    config = load_config(cfg_path, env={})
    db = open_db(db_path(config.data_dir), SESSIONS)
    voucher = SessionService(config, db).issue_local_vouchers("heure", 1)[0]
    db.conn.close()
    hub = Hub(lab, rundir, cfg_path, None, None, voucher)  # type: ignore[arg-type]
    try:
        hub.start_agent()
        hub.portal = lab.spawn(
            lab.hub_ns,
            *portal_setpriv(),
            str(BIN / "captive-portal"),
            "--config",
            str(cfg_path),
            log="portal.log",
        )
        lab.wait_port(lab.hub_ns, HUB_LAN, 8080, timeout=20)
        yield hub
    finally:
        for p in (hub.agent, hub.portal):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
        lab.hub_exec("nft", "delete", "table", "inet", "relais")
        lab.close()
        shutil.rmtree(rundir, ignore_errors=True)


def issue_voucher(hub: Hub) -> str:
    """Another voucher, issued as the caretaker would while the agent runs."""
    r = subprocess.run(
        [str(BIN / "hub-agent"), "vouchers", "issue", "--config", str(hub.config_path),
         "--plan", "heure", "--count", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return r.stdout.split()[0]


def _get(c: Client, url: str, *args: str, timeout: float = 5) -> tuple[str, str, str]:
    r = c.curl(url, "-o", "-", "-w", "\n%{http_code} %{redirect_url}", *args, timeout=timeout)
    body, _, tail = r.stdout.rpartition("\n")
    code, _, location = tail.partition(" ")
    return code, location, body


def _login(c: Client, code: str, portal: str = PORTAL) -> str:
    _, _, page = _get(c, portal + "/")
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, page[:500]
    status, _, body = _get(
        c,
        portal + "/login",
        "--data-urlencode",
        "method=voucher",
        "--data-urlencode",
        f"code={code}",
        "--data-urlencode",
        f"csrf={token.group(1)}",
    )
    assert status == "200", body[:500]
    return body


def _reaches_upstream(c: Client) -> bool:
    r = c.curl(f"http://{UPSTREAM}/", timeout=3)
    return r.returncode == 0 and "upstream internet" in r.stdout


def test_phone_logs_in_and_survives_agent_kill(hub: Hub) -> None:
    c1, c2 = hub.lab.clients
    # Captive: any web request lands on the splash page.
    code, location, _ = _get(c1, f"http://{UPSTREAM}/")
    assert (code, location) == ("302", PORTAL + "/"), hub.log("agent.log")
    assert not _reaches_upstream(c1)

    body = _login(c1, hub.voucher)
    assert "Vous êtes connecté" in body, body[:800]
    t0 = time.monotonic()
    while not _reaches_upstream(c1):
        assert time.monotonic() - t0 < 1.0, "device not online within 1 s of login"
        time.sleep(0.05)
    assert not _reaches_upstream(c2)
    assert _get(c1, f"http://{UPSTREAM}/generate_204")[0] != "302"

    # kill -9: the kernel keeps enforcing exactly as before.
    hub.agent.send_signal(signal.SIGKILL)
    hub.agent.wait(5)
    assert _reaches_upstream(c1)
    assert not _reaches_upstream(c2)

    # Wreck the kernel state too (as a reboot would), then restart: reconcile repairs it.
    hub.lab.hub_exec("nft", "delete", "table", "inet", "relais")
    (hub.rundir / "agent.sock").unlink(missing_ok=True)
    hub.start_agent()
    t0 = time.monotonic()
    while not _reaches_upstream(c1):
        assert time.monotonic() - t0 < 10, hub.log("agent.log")
        time.sleep(0.1)
    assert not _reaches_upstream(c2)
    code, _, _ = _get(c2, f"http://{UPSTREAM}/")
    assert code == "302"
    # The portal (unprivileged, never restarted) still reaches the restarted agent.
    second = issue_voucher(hub)
    assert "Vous êtes connecté" in _login(c2, second)
    assert _reaches_upstream(c2)


@pytest.mark.parametrize("earlier_leaf", ["", "pfifo_fast"], ids=["same-leaf", "other-leaf"])
def test_online_device_logs_in_again_after_agent_kill(hub: Hub, earlier_leaf: str) -> None:
    """Regression (issue 14): a device online before a kill -9 could not log in again
    (the new process tried to replace the old process's leaf qdisc with another kind:
    EINVAL, 503, and the code was consumed without access). ``other-leaf``: the earlier
    process built its leaves of another kind, as a kernel with fq_codel and one without
    would (this lab kernel has only the fifos, so pfifo_fast stands in for fq_codel)."""
    c1, c2 = hub.lab.clients
    if earlier_leaf:
        hub.kill_agent()
        hub.start_agent(f"RELAIS_TC_LEAF={earlier_leaf}")
    _login(c1, hub.voucher)
    assert _reaches_upstream(c1)
    hub.kill_agent()
    hub.start_agent()
    # the same code again on the same device is the same login
    try:
        page = _login(c1, hub.voucher)
    except AssertionError:
        raise AssertionError(hub.log("agent.log")) from None
    assert "Vous êtes connecté" in page
    assert _reaches_upstream(c1)
    # another code on the same device, and a new device
    assert "Vous êtes connecté" in _login(c1, issue_voucher(hub)), hub.log("agent.log")
    assert "Vous êtes connecté" in _login(c2, issue_voucher(hub)), hub.log("agent.log")
    assert _reaches_upstream(c1) and _reaches_upstream(c2)
    assert "api handler failed" not in hub.log("agent.log")
    leaves = hub.lab.hub_exec("tc", "qdisc", "show", "dev", "lan0").stdout
    assert "pfifo_fast" not in leaves and "pfifo" in leaves, leaves


def test_status_and_logout_end_access(hub: Hub) -> None:
    c1 = hub.lab.clients[0]
    _login(c1, hub.voucher)
    assert _reaches_upstream(c1)
    code, _, page = _get(c1, PORTAL + "/status")
    assert code == "200" and "Pass 1 heure" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    _get(c1, PORTAL + "/logout", "--data-urlencode", f"csrf={token.group(1)}")
    assert not _reaches_upstream(c1)
    assert _get(c1, f"http://{UPSTREAM}/generate_204")[:2] == ("302", PORTAL + "/")


def test_hub_dns_opens_the_walled_garden_by_name(hub: Hub) -> None:
    c1 = hub.lab.clients[0]
    garden = DOMAINS["service-public.gouv.tg"]
    # Before the hub's resolver has answered for it, the garden's address is captive too.
    assert _get(c1, f"http://{garden}/")[0] == "302"
    r = c1.exec("python3", "-c", DNS_QUERY, "service-public.gouv.tg", HUB_LAN)
    assert r.returncode == 0 and r.stdout.strip() == garden, r.stderr + hub.log("agent.log")
    # dnsmasq put the answer into the walled-garden set: reachable without logging in.
    assert "upstream internet" in c1.curl(f"http://{garden}/").stdout
    assert _get(c1, f"http://{DOMAINS['example.test']}/")[0] == "302"


def test_dashboard_lists_lan_devices_with_dhcp_hostnames(hub: Hub) -> None:
    # The agent's discovery (neighbour table + sniffed DHCP/ARP + leases) feeds the
    # caretaker's device list: a phone that only asked for an address shows by name.
    import asyncio

    from hub_agent.api.client import call
    from hub_agent.api.protocol import ListDevices
    from tests.linux.test_enforce_discovery import DHCP_DISCOVER

    c1, c2 = hub.lab.clients
    r = c1.exec(sys.executable, "-c", DHCP_DISCOVER, timeout=20)
    assert r.returncode == 0, r.stderr[-500:]
    assert c2.exec("ping", "-c", "1", "-W", "1", HUB_LAN).returncode == 0  # never logged in
    deadline = time.monotonic() + 25  # one discovery pass every 10 s
    by_mac: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = asyncio.run(call(hub.rundir / "agent.sock", ListDevices()))
        by_mac = {d.mac: d for d in resp.devices or []}
        if c1.mac in by_mac and by_mac[c1.mac].hostname and c2.mac in by_mac:
            break
        time.sleep(1)
    assert by_mac.get(c1.mac) and by_mac[c1.mac].hostname == "phone-amy", by_mac
    assert by_mac.get(c2.mac) and by_mac[c2.mac].ip == c2.ip, by_mac
    assert (by_mac[c2.mac].last_seen or 0) > time.time() - 60
    assert by_mac[c2.mac].session is None  # seen is not authorised
