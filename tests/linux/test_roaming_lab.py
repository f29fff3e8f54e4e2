"""Roaming for real: two hubs, each `hub-agent run` and `captive-portal` in its own lab
(network namespaces, the agent's nftables quotas counting real traffic), one Mosquitto and
one centre (the real controller ingest and balance desk, lab/roaming.py's ``Centre``) on
this machine, which each lab's upstream routes to through a veth of its own.

Use at hub A (a real download), log in at hub B: B's status page and its kernel quota
show what is left. Hub B cut from the centre: the bounded offline allowance is granted
and enforced by B's kernel quota; a second phone's allowance is reconciled with the
centre's balance when B's link comes back. A code the centre never issued is refused
online and is a finding naming hub B.

Plans are scaled down (an 8 MB pass at 100 Mbit/s) so the downloads take moments.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from captive_portal.i18n import Languages, load_catalogue
from captive_portal.render import fmt_bytes
from hub_agent.enforce.nft_apply import live_devices
from hub_agent.enforce.nft_plan import LiveDevice
from hub_agent.sessions.quota import MB
from hub_agent.sessions.vouchers import make_central_code, month_index
from lab.broker import Broker
from lab.firstpacket import PORTAL, logout, portal_get
from lab.netns import UPSTREAM, Client, Lab, run
from lab.roaming import Centre
from provisioning import balances, registry
from tests.conftest import require_lab
from tests.linux.test_agent_e2e import Hub, _reaches_upstream, running_hub

pytestmark = pytest.mark.root

QUOTA_MB = 8
SHARE_PCT = 25  # hub B's offline allowance: 2 MB of an 8 MB pass


def wait_for(cond: Callable[[], object], timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(step)


def link_to_host(stack: ExitStack, lab: Lab, octet: int) -> str:
    """A veth from this machine to the lab's upstream, which forwards (and masquerades) the
    hub's traffic to it: the hub reaches this machine's broker as a remote centre. Its
    ``ctl0`` end is the hub's link to the centre. Returns this machine's address."""
    host_end = f"rrm{lab.run_id.replace('-', '')[-10:]}"[:15]
    run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "ctl0", "netns",
         lab.upstream_ns])  # fmt: skip
    # gone with the namespace, unless something still holds the namespace (seen once)
    stack.callback(run, ["ip", "link", "del", host_end], False)
    run(["ip", "addr", "add", f"169.254.{octet}.1/30", "dev", host_end])
    run(["ip", "link", "set", host_end, "up"])
    lab.ip(lab.upstream_ns, "addr", "add", f"169.254.{octet}.2/30", "dev", "ctl0")
    lab.ip(lab.upstream_ns, "link", "set", "ctl0", "up")
    lab.sysctl(lab.upstream_ns, "net.ipv4.ip_forward", "1")
    lab.nft(lab.upstream_ns, "table ip centre_nat {\n chain post { type nat hook postrouting"
            ' priority srcnat; policy accept;\n  oifname "ctl0" masquerade\n }\n}\n')  # fmt: skip
    return f"169.254.{octet}.1"


def centre_reachable(lab: Lab, up: bool) -> None:
    """Cut or restore the hub's way to the centre (the rest of its internet stays)."""
    lab.ip(lab.upstream_ns, "link", "set", "ctl0", "up" if up else "down")


def start_hub(stack: ExitStack, hub_id: str, centre: Centre, broker_port: int, octet: int) -> Hub:
    def edit(lab: Lab, data: dict[str, Any]) -> None:
        (lab.www_root / "blob3.bin").write_bytes(os.urandom(3 * MB))
        (lab.www_root / "blob05.bin").write_bytes(os.urandom(MB // 2))
        host = link_to_host(stack, lab, octet)
        data["hub"]["id"] = hub_id
        data["trust"] = {"central_public_key": centre.key.public_b64,
                         "voucher_secret": centre.secret}  # fmt: skip
        data["mqtt"].update(url=f"mqtt://{host}:{broker_port}", keepalive_s=5,
                            drain_rate_per_s=1000)  # fmt: skip
        data["mqtt"].pop("username", None)
        data["mqtt"].pop("password", None)
        data["roaming"] = {"report_every_s": 0.5, "offline_share_pct": SHARE_PCT,
                           "query_timeout_ms": 1000}  # fmt: skip
        heure = next(p for p in data["plans"] if p["id"] == "heure")
        heure.update(data_quota_mb=QUOTA_MB, down_kbit=100_000, up_kbit=100_000)

    return stack.enter_context(running_hub(edit))


def connected(hub: Hub, times: int = 1) -> bool:
    return hub.log("agent.log").count("MQTT connected to") >= times


def login(c: Client, code: str) -> str:
    """The HTTP status of a voucher login through the splash form."""
    _, _, page = portal_get(c, PORTAL + "/")
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    status, _, body = portal_get(
        c, PORTAL + "/login", "--data-urlencode", "method=voucher", "--data-urlencode",
        f"code={code}", "--data-urlencode", f"csrf={token}",
    )  # fmt: skip
    return status if status == "200" else f"{status}: {body}"


def status_page(c: Client) -> str:
    return portal_get(c, PORTAL + "/status")[2]


def kernel(hub: Hub, mac: str) -> LiveDevice | None:
    out = hub.lab.hub_exec("nft", "-j", "list", "table", "inet", "relais").stdout
    return live_devices(json.loads(out)).get(mac)


def download(c: Client, name: str) -> int:
    r = c.exec("curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{size_download}",
               f"http://{UPSTREAM}/{name}", timeout=30)  # fmt: skip
    return int(r.stdout.strip() or 0)


def settled(centre: Centre, hub: Hub, c: Client, code: str) -> int:
    """What the centre holds for ``code`` once it has all the hub's kernel counted for the
    phone (its download done)."""

    def caught_up() -> bool:
        d = kernel(hub, c.mac)
        return d is not None and centre.used(code) >= d.up_bytes + d.down_bytes > 0

    wait_for(caught_up, 30, f"{hub.lab.hub_ns}'s usage never reached the centre")
    return centre.used(code)


def mb(n: int) -> str:
    return fmt_bytes(n, Languages.build(["fr"], "fr", load_catalogue()).translator("fr"))


@pytest.fixture
def two_hubs() -> Iterator[tuple[Centre, Hub, Hub]]:
    require_lab()
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="relais-roaming-"))
        stack.callback(shutil.rmtree, tmp, True)
        broker = stack.enter_context(Broker(host="0.0.0.0"))
        centre = Centre(tmp, f"mqtt://127.0.0.1:{broker.port}")
        centre.start()
        stack.callback(centre.stop)
        octet = 100 + secrets.randbelow(100)
        # the two hubs come up side by side (each its own stack, both unwound by this one)
        stacks = [stack.enter_context(ExitStack()) for _ in range(2)]
        with ThreadPoolExecutor(2) as pool:
            fa = pool.submit(start_hub, stacks[0], "hub-a", centre, broker.port, octet)
            fb = pool.submit(start_hub, stacks[1], "hub-b", centre, broker.port, octet + 1)
            a, b = fa.result(), fb.result()
        wait_for(lambda: connected(a) and connected(b), 30, "a hub never reached the broker")
        yield centre, a, b


def test_balance_follows_the_code_between_real_hubs(two_hubs: tuple[Centre, Hub, Hub]) -> None:
    centre, a, b = two_hubs
    a1, a2 = a.lab.clients
    b1, b2 = b.lab.clients
    quota = QUOTA_MB * MB
    pass1, pass2, pass3 = centre.issue("heure", 3)

    # 3 MB downloaded at hub A: the kernel counts them, the centre gets them
    assert login(a1, pass1) == "200"
    assert download(a1, "blob3.bin") == 3 * MB
    used_a = settled(centre, a, a1, pass1)
    assert used_a > 3 * MB
    logout(a1)

    # at hub B the same pass has what is left: on the status page and in B's kernel quota
    assert login(b1, pass1) == "200"
    page = status_page(b1)
    assert mb(quota - used_a) in page and "hub-a" in page, page[-2000:]
    assert "une part de votre forfait" not in page
    dev = kernel(b, b1.mac)
    assert dev is not None and dev.quota_bytes == quota - used_a
    assert _reaches_upstream(b1)
    logout(b1)

    # a code the centre never issued (minted with the hubs' secret) is refused online
    forged = make_central_code(centre.secret.encode(), "heure", month_index(time.time()), 99_999)
    refused = login(b2, forged)
    assert refused != "200" and "existe pas" in refused, refused[:3000]
    assert not _reaches_upstream(b2)

    # 3 MB of pass 2 at hub A; then hub B loses the centre
    assert login(a2, pass2) == "200"
    assert download(a2, "blob3.bin") == 3 * MB
    used_a2 = settled(centre, a, a2, pass2)
    centre_reachable(b.lab, False)

    # offline: B grants 25% of the pass, and its kernel quota enforces it
    allowance = quota * SHARE_PCT // 100
    assert login(b2, pass2) == "200"
    assert "une part de votre forfait vous est accordée" in status_page(b2)
    dev = kernel(b, b2.mac)
    assert dev is not None and dev.quota_bytes == allowance
    got = download(b2, "blob3.bin")
    assert got < allowance, got  # the kernel quota cut the download
    wait_for(lambda: not _reaches_upstream(b2), 15, "packets still pass beyond the allowance")

    # a third pass, first used offline at B: 0.5 MB within the allowance
    assert login(b1, pass3) == "200"
    assert download(b1, "blob05.bin") == MB // 2
    dev = kernel(b, b1.mac)
    assert dev is not None and dev.quota_bytes == allowance

    # B's link comes back: its offline usage reaches the centre, pass 3's grant is
    # reconciled with the centre's balance (the whole pass less what B counted) in the
    # kernel quota, and the page no longer speaks of an allowance
    centre_reachable(b.lab, True)
    wait_for(lambda: centre.used(pass2) > used_a2 + allowance * 9 // 10, 60,
             "hub B's offline usage never reached the centre")  # fmt: skip
    assert centre.used(pass2) <= used_a2 + allowance  # B's overspend: bounded by the share
    wait_for(lambda: (d := kernel(b, b1.mac)) and (d.quota_bytes or 0) > allowance, 60,
             "pass 3's offline grant never reconciled")  # fmt: skip
    d = kernel(b, b1.mac)
    assert d is not None and d.quota_bytes is not None
    # what B counted: the 0.5 MB download, its headers and whatever else the phone sent
    assert quota - MB < d.quota_bytes <= quota - MB // 2, d
    page = status_page(b1)
    assert mb(d.quota_bytes) in page, page[-2000:]
    assert "une part de votre forfait" not in page and "hub-a" not in page, page[-2000:]
    assert _reaches_upstream(b1)

    db = registry.open_registry(centre.db_path)
    found = {f.kind: f for f in balances.roaming_findings(db)}
    assert [h for h, _, _ in found["never_issued"].hubs] == ["hub-b"]
