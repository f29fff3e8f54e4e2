"""The captive firewall in the real kernel: what a device reaches before and after login."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState
from lab.netns import HUB_LAN, UPSTREAM, UPSTREAM6, Lab
from tests.linux.test_enforce_helpers import (
    PORTAL_MARK,
    WALLED_CIDR_IP,
    grant,
    lab_config,
    lab_with_portal,
    reaches,
)

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def nolab() -> Iterator[Lab]:
    with lab_with_portal(3) as built:
        yield built


@pytest.fixture
def enf(nolab: Lab) -> Iterator[Enforcer]:
    e = Enforcer(lab_config(nolab), netns=nolab.hub_ns, shaping=False)
    e.reconcile(DesiredState())
    yield e
    e.close()


def test_unauthorised_http_lands_on_portal(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    r = c1.curl(f"http://{UPSTREAM}/some/page")
    assert r.returncode == 0, r.stderr
    assert PORTAL_MARK in r.stdout


def test_unauthorised_https_refused_with_reset(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    t0 = time.monotonic()
    r = c1.curl(f"https://{UPSTREAM}/", timeout=5)
    elapsed = time.monotonic() - t0
    assert r.returncode == 7, (r.returncode, r.stderr)  # 7: connection refused (RST)
    assert elapsed < 4  # refused, not timed out (curl would give 28)


def test_walled_garden_cidr_reachable_but_not_the_rest(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    assert reaches(c1, f"http://{WALLED_CIDR_IP}/")
    # anything else on port 80 is the portal, not upstream
    assert PORTAL_MARK in c1.curl(f"http://{UPSTREAM}/").stdout
    # UDP elsewhere is dropped
    r = c1.exec("python3", "-c", _UDP_PROBE, UPSTREAM, "9", timeout=10)
    assert "timeout" in r.stdout


_UDP_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
try:
    s.recv(10); print("answered")
except OSError as e:
    print("timeout" if isinstance(e, TimeoutError) else f"error {e}")
"""


def test_ipv6_blocked_before_login(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    assert not reaches(c1, f"http://[{UPSTREAM6}]/")  # port 80 lands on the portal
    assert c1.curl(f"https://[{UPSTREAM6}]/").returncode == 7
    r = c1.exec("ping", "-6", "-c", "1", "-W", "1", UPSTREAM6)
    assert r.returncode != 0


def test_clients_isolated(nolab: Lab, enf: Enforcer) -> None:
    c1, c2 = nolab.clients[0], nolab.clients[1]
    assert c1.exec("ping", "-c", "1", "-W", "1", HUB_LAN).returncode == 0  # the hub answers
    assert c1.exec("ping", "-c", "1", "-W", "1", c2.ip).returncode != 0
    assert c1.exec("ping", "-6", "-c", "1", "-W", "1", c2.ip6).returncode != 0
    # even once both are logged in
    enf.authorize(grant(c1))
    enf.authorize(grant(c2))
    assert c1.exec("ping", "-c", "1", "-W", "1", c2.ip).returncode != 0


def test_hub_admin_ports_closed_portal_open(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    nolab.spawn(nolab.hub_ns, "python3", "-m", "http.server", "--bind", "0.0.0.0", "9100")
    nolab.wait_port(nolab.hub_ns, HUB_LAN, 9100)
    assert (
        nolab.hub_exec("curl", "-s", "-o", "/dev/null", f"http://{HUB_LAN}:9100/").returncode == 0
    )
    assert c1.curl(f"http://{HUB_LAN}:9100/").returncode == 7  # reset, not served
    assert PORTAL_MARK in c1.curl(f"http://{HUB_LAN}:8080/").stdout
    enf.authorize(grant(c1))
    assert c1.curl(f"http://{HUB_LAN}:9100/").returncode == 7


def test_authorise_then_deauthorise(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    assert not reaches(c1, f"http://{UPSTREAM}/")
    enf.authorize(grant(c1))
    assert reaches(c1, f"http://{UPSTREAM}/")
    assert reaches(c1, f"http://[{UPSTREAM6}]/")
    assert "upstream internet" in c1.curl(f"http://{UPSTREAM}/").stdout
    enf.deauthorize(c1.mac)
    assert PORTAL_MARK in c1.curl(f"http://{UPSTREAM}/").stdout
    assert not reaches(c1, f"http://[{UPSTREAM6}]/")
    enf.deauthorize(c1.mac)  # already gone: success


def test_kernel_timeout_ends_session(nolab: Lab, enf: Enforcer) -> None:
    c1 = nolab.clients[0]
    enf.authorize(grant(c1, timeout_s=2))
    assert reaches(c1, f"http://{UPSTREAM}/")
    time.sleep(2.5)
    assert PORTAL_MARK in c1.curl(f"http://{UPSTREAM}/").stdout
    enf.deauthorize(c1.mac)  # the kernel already removed the auth elements


def test_staff_bypass_and_blocked(nolab: Lab) -> None:
    c1, c3 = nolab.clients[0], nolab.clients[2]
    cfg = lab_config(nolab, staff={"guaranteed_share_pct": 40, "devices": [{"mac": c3.mac}]})
    e = Enforcer(cfg, netns=nolab.hub_ns, shaping=False)
    try:
        e.reconcile(DesiredState(grants=(grant(c1),)))
        assert reaches(c3, f"http://{UPSTREAM}/")  # staff: no login
        assert reaches(c1, f"http://{UPSTREAM}/")
        e.set_blocked([c1.mac, c3.mac])
        assert not reaches(c1, f"http://{UPSTREAM}/")
        assert not reaches(c3, f"http://{UPSTREAM}/")
        assert c1.exec("ping", "-c", "1", "-W", "1", HUB_LAN).returncode != 0
        e.set_blocked([])
        assert reaches(c1, f"http://{UPSTREAM}/")
    finally:
        e.close()


def test_spoofed_ip_not_authorised(nolab: Lab, enf: Enforcer) -> None:
    c1, c2 = nolab.clients[0], nolab.clients[1]
    enf.authorize(grant(c1))
    # c2 takes c1's IP on a second address: its MAC is not authorised for it
    c2.exec("ip", "addr", "add", f"{c1.ip}/32", "dev", "eth0", check=True)
    try:
        r = c2.curl(f"http://{UPSTREAM}/", "--interface", c1.ip)
        assert "upstream internet" not in r.stdout
    finally:
        c2.exec("ip", "addr", "del", f"{c1.ip}/32", "dev", "eth0")
