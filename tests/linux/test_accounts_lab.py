"""Login method ``account`` for real: `hub-agent run` and `captive-portal` in the hub
namespace, FreeRADIUS in the upstream "internet", a phone on the LAN.

A wrong password gets the splash with its error and no access; alice's account logs in
through the portal, her device is shaped at the rates her Access-Accept gave (then at the
rate a CoA-Request sets); accounting
Start and Stop reach FreeRADIUS' detail file with the octets the kernel counted (within
1%); a Disconnect-Request from radclient ends the session and the packets stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hub_agent.enforce.nft_apply import live_devices
from lab.netns import HUB_WAN, UPSTREAM, Client, Lab
from lab.radius import SECRET, FreeRadius, radclient, require_freeradius
from tests.linux.test_agent_e2e import PORTAL, Hub, _get, _reaches_upstream, running_hub

pytestmark = pytest.mark.root

BLOB = 400_000  # bytes downloaded: ~1.6 s at alice's 2048 kbit/s


def wait_for(cond: Callable[[], object], timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(step)


@contextlib.contextmanager
def account_hub() -> Iterator[tuple[Hub, FreeRadius]]:
    """The lab with `hub-agent run` and `captive-portal` offering account logins against
    FreeRADIUS in the upstream namespace (also bench/bench_radius.py's)."""
    require_freeradius()
    servers: list[FreeRadius] = []

    def edit(lab: Lab, data: dict[str, Any]) -> None:
        (lab.www_root / "blob.bin").write_bytes(os.urandom(BLOB))
        radius = FreeRadius(auth_port=1812, acct_port=1813, listen=UPSTREAM, client=HUB_WAN,
                            netns=lab.upstream_ns)  # fmt: skip
        servers.append(radius)
        radius.start()
        data["portal"]["login_methods"] = ["voucher", "free", "account"]
        server = {"address": UPSTREAM, "secret": SECRET, "timeout_s": 0.5, "retries": 1}
        data["radius"] = {"primary": server, "coa_listen": HUB_WAN, "interim_interval_s": 60}

    try:
        with running_hub(edit) as hub:
            yield hub, servers[0]
    finally:
        for radius in servers:
            radius.stop()
            shutil.rmtree(radius.workdir, ignore_errors=True)


@pytest.fixture
def lab_hub() -> Iterator[tuple[Hub, FreeRadius]]:
    with account_hub() as running:
        yield running


def account_login(c: Client, username: str, password: str) -> tuple[str, str]:
    _, _, page = _get(c, PORTAL + "/")
    assert 'name="password"' in page, page[:800]  # the splash offers the account form
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, page[:500]
    status, _, body = _get(
        c, PORTAL + "/login", "--data-urlencode", "method=account",
        "--data-urlencode", f"username={username}", "--data-urlencode", f"password={password}",
        "--data-urlencode", f"csrf={token.group(1)}",
    )  # fmt: skip
    return status, body


def kernel_counts(hub: Hub, mac: str) -> tuple[int, int]:
    out = hub.lab.hub_exec("nft", "-j", "list", "table", "inet", "relais").stdout
    dev = live_devices(json.loads(out)).get(mac)
    assert dev is not None, f"{mac} not in the kernel"
    return dev.up_bytes, dev.down_bytes


def octets(rec: dict[str, str], side: str) -> int:
    return int(rec.get(f"Acct-{side}-Octets", 0)) + (
        int(rec.get(f"Acct-{side}-Gigawords", 0)) << 32
    )


def test_account_login_rates_accounting_and_disconnect(
    lab_hub: tuple[Hub, FreeRadius],
) -> None:
    hub, radius = lab_hub
    c1, c2 = hub.lab.clients

    # a wrong password: the splash with its error, and no access
    status, body = account_login(c2, "alice", "not-her-password")
    assert status == "400" and "Identifiant ou mot de passe incorrect" in body, body[:800]
    assert "not-her-password" not in body
    assert not _reaches_upstream(c2)

    status, body = account_login(c1, "alice", "alice-pass")
    assert status == "200" and "Vous êtes connecté" in body, body[:800] + hub.log("agent.log")
    wait_for(lambda: _reaches_upstream(c1), 5, "alice's device not online")
    assert not _reaches_upstream(c2)
    # shaped at her Access-Accept's WISPr rates: 2048 kbit/s down, 512 kbit/s up
    classes = hub.lab.hub_exec("tc", "class", "show", "dev", "lan0").stdout
    assert "ceil 2048Kbit" in classes, classes  # the device's class: its grant is the ceiling
    up_classes = hub.lab.hub_exec("tc", "class", "show", "dev", "wan0").stdout
    assert "ceil 512Kbit" in up_classes, up_classes

    # traffic, then the counts settle in the kernel
    r = c1.exec("curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
                f"http://{UPSTREAM}/blob.bin", timeout=30)  # fmt: skip
    assert r.stdout.strip() == str(BLOB), r.stderr
    seen: list[tuple[int, int]] = []

    def settled() -> bool:
        seen.append(kernel_counts(hub, c1.mac))
        return len(seen) > 2 and seen[-1] == seen[-2] == seen[-3]

    wait_for(settled, 10, "kernel counters never settled", step=0.3)
    up, down = seen[-1]
    assert down > BLOB

    # a CoA-Request halves her download rate: the device's class follows
    got = radclient(3799, "coa", {"User-Name": '"alice"', "WISPr-Bandwidth-Max-Down": "1024000"},
                    SECRET, timeout=2.0, host=HUB_WAN, netns=hub.lab.upstream_ns)  # fmt: skip
    assert "Received CoA-ACK" in got.stdout, got.stdout + got.stderr + hub.log("agent.log")
    classes = hub.lab.hub_exec("tc", "class", "show", "dev", "lan0").stdout
    assert "ceil 1024Kbit" in classes and "ceil 2048Kbit" not in classes, classes
    assert _reaches_upstream(c1)
    seen.clear()
    wait_for(settled, 10, "kernel counters never settled", step=0.3)
    up, down = seen[-1]

    # Disconnect-Request from the AAA's side: ACK, and the packets stop
    got = radclient(3799, "disconnect", {"User-Name": '"alice"'}, SECRET, timeout=2.0,
                    host=HUB_WAN, netns=hub.lab.upstream_ns)  # fmt: skip
    assert "Received Disconnect-ACK" in got.stdout, got.stdout + got.stderr + hub.log("agent.log")
    wait_for(lambda: not _reaches_upstream(c1), 3, "packets still pass after Disconnect")

    # Start and Stop in FreeRADIUS' detail file, the Stop with the kernel's counts
    def stop() -> dict[str, str] | None:
        recs = [r for r in radius.records() if r.get("User-Name") == "alice"]
        return next((r for r in recs if r.get("Acct-Status-Type") == "Stop"), None)

    wait_for(stop, 10, "no accounting Stop in the detail file")
    recs = [r for r in radius.records() if r.get("User-Name") == "alice"]
    kinds = [r["Acct-Status-Type"] for r in recs]
    assert kinds[0] == "Start" and kinds[-1] == "Stop", kinds
    last = recs[-1]
    assert last["Acct-Terminate-Cause"] == "Admin-Reset"
    assert last["Acct-Session-Id"] == recs[0]["Acct-Session-Id"]
    assert abs(octets(last, "Output") - down) <= down / 100, (last, down)
    assert abs(octets(last, "Input") - up) <= up / 100, (last, up)
