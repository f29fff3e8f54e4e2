"""A pushed config moves the portal's port without a restart (issue 16), in the real lab.

The hub (`hub-agent run` and `captive-portal`, tests/linux/test_agent_e2e.py's lab) talks to
a Mosquitto in the upstream namespace; the centre's signed envelope is published there,
retained, as ``hubctl push`` does. After the agent applies it: a captive phone is sent to
the new port, the portal answers there (and logs a phone in), DHCP option 114 names it,
the phone online before stays online, and neither the agent nor the portal restarted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from hub_agent.configsync import load_active_config
from hub_agent.signing import SigningKey, sign_envelope
from hub_agent.telemetry import topics
from lab import paylab
from lab.broker import Broker
from lab.netns import DNS_QUERY, DOMAINS, HUB_LAN, HUB_WAN6, UPSTREAM, UPSTREAM6, Client, Lab
from tests.conftest import require_mosquitto
from tests.linux.test_agent_e2e import (
    PORTAL,
    Hub,
    _get,
    _login,
    _reaches_upstream,
    issue_voucher,
    running_hub,
)

pytestmark = pytest.mark.root

CENTRAL = SigningKey.generate()
MQTT_PORT = 1883
WAIT_S = 60.0  # generous: the machine is shared and loaded


def wait_for(what: str, pred: Callable[[], Any], hub: Hub) -> Any:
    try:
        return paylab.wait_for(what, pred, WAIT_S, every=0.2)
    except paylab.Timeout as e:
        logs = "\n".join(f"--- {n}\n{hub.log(n)}" for n in ("agent.log", "portal.log"))
        raise AssertionError(f"{e}\n{logs}") from None


def captive_phone_sent_to(hub: Hub, c: Client, portal: str) -> None:
    """Wait until a captive phone's web request is redirected to ``portal`` and the portal
    answers its splash page there (the kernel follows at once, the portal within seconds)."""

    def sent() -> bool:
        got = _get(c, f"http://{UPSTREAM}/")[:2]
        print("captive phone got", got)  # shown when the wait fails
        return got == ("302", portal + "/")

    wait_for(f"a captive phone sent to {portal}", sent, hub)
    code, _, page = _get(c, portal + "/")
    assert code == "200" and 'name="csrf"' in page, page[:500]
    assert not _reaches_upstream(c)


def online_phone(hub: Hub) -> tuple[int, int]:
    """Log the first phone in; the agent's and the portal's PIDs before the push."""
    assert "Vous êtes connecté" in _login(hub.lab.clients[0], hub.voucher)
    wait_for("c1 online", lambda: _reaches_upstream(hub.lab.clients[0]), hub)
    return hub.agent.pid, hub.portal.pid


def same_processes(hub: Hub, pids: tuple[int, int]) -> None:
    assert hub.agent.poll() is None and hub.agent.pid == pids[0], "the agent restarted"
    assert hub.portal.poll() is None and hub.portal.pid == pids[1], "the portal restarted"


@pytest.fixture
def pushed_hub() -> Iterator[tuple[Hub, Broker]]:
    require_mosquitto()
    brokers: list[Broker] = []

    def with_broker(lab: Lab, data: dict[str, Any]) -> None:
        broker = Broker(host=UPSTREAM, port=MQTT_PORT, netns=lab.upstream_ns)
        brokers.append(broker)
        broker.start()
        data["mqtt"]["url"] = f"mqtt://{UPSTREAM}:{MQTT_PORT}"
        data["trust"]["central_public_key"] = CENTRAL.public_b64

    try:
        with running_hub(with_broker) as hub:
            yield hub, brokers[0]
    finally:
        for b in brokers:
            b.close()


def push(
    hub: Hub,
    broker: Broker,
    change: Callable[[dict[str, Any]], None],
    expect: str = "applied",
) -> dict[str, Any]:
    """Sign the running config with ``change`` as the next version and publish it retained;
    wait until the agent reports on it, with status ``expect``; the report."""
    current = load_active_config(hub.rundir / "data", hub.config_path, env={})
    last = hub.rundir / "data" / "config" / "last_result.json"
    earlier = json.loads(last.read_text()) if last.exists() else None
    wire = current.to_wire()
    wire["version"] = current.version + 1
    change(wire)
    envelope = hub.rundir / "envelope.json"
    signed = sign_envelope(CENTRAL, current.hub.id, wire["version"], wire)
    envelope.write_text(json.dumps(signed))
    hub.lab.spawn(
        hub.lab.upstream_ns, "mosquitto_pub", "-h", UPSTREAM, "-p", str(MQTT_PORT), "-q", "1",
        "-r", "-t", topics.config_desired(current.hub.id), "-f", str(envelope), log="pub.log",
    ).wait(30)  # fmt: skip

    def report() -> dict[str, Any] | None:
        try:
            got: dict[str, Any] = json.loads(last.read_text())
        except (OSError, ValueError):
            return None
        # (a version rolled back before is pushed again: its old report is not the answer)
        return got if got.get("version") == wire["version"] and got != earlier else None

    got: dict[str, Any] = wait_for("the agent's report on the pushed config", report, hub)
    assert got["status"] == expect, got
    return got


def test_a_pushed_portal_port_is_followed_without_a_restart(
    pushed_hub: tuple[Hub, Broker],
) -> None:
    hub, broker = pushed_hub
    c1, c2 = hub.lab.clients
    pids = online_phone(hub)
    assert _get(c2, f"http://{UPSTREAM}/")[:2] == ("302", PORTAL + "/")

    def new_port(wire: dict[str, Any]) -> None:
        wire["portal"]["http_port"] = 8090

    push(hub, broker, new_port)
    moved = f"http://{HUB_LAN}:8090"
    captive_phone_sent_to(hub, c2, moved)
    assert _get(c2, PORTAL + "/", timeout=3)[0] == "000", "the old port still answers"
    assert f"{moved}/api/captive" in (hub.rundir / "data" / "dnsmasq.conf").read_text()
    assert _reaches_upstream(c1), "the phone online before the push lost its access"
    # The moved portal still talks to the agent: a new phone logs in there.
    assert "Vous êtes connecté" in _login(c2, issue_voucher(hub), portal=moved)
    wait_for("c2 online", lambda: _reaches_upstream(c2), hub)
    same_processes(hub, pids)
    assert "listening on http://10.42.0.1:8090/" in hub.log("portal.log")


def renumber(hub: Hub, c: Client, ip: str, gateway: str) -> None:
    """What the phone's next DHCP exchange does: an address in the new subnet, the hub's
    new address as its gateway."""
    hub.lab.ip(c.ns, "addr", "del", f"{c.ip}/24", "dev", "eth0")
    hub.lab.ip(c.ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    hub.lab.ip(c.ns, "route", "replace", "default", "via", gateway)
    c.ip = ip


def test_a_pushed_lan_address_is_followed_without_a_restart(
    pushed_hub: tuple[Hub, Broker],
) -> None:
    hub, broker = pushed_hub
    c1, c2 = hub.lab.clients
    pids = online_phone(hub)

    def new_address(wire: dict[str, Any]) -> None:
        wire["network"]["lan"].update(
            address="10.43.0.1/24", dhcp_start="10.43.0.100", dhcp_end="10.43.0.200"
        )

    push(hub, broker, new_address)
    addrs = hub.lab.hub_exec("ip", "-4", "-o", "addr", "show", "dev", "lan0").stdout
    assert "10.43.0.1/24" in addrs and "10.42.0.1/" not in addrs, addrs
    dhcp = (hub.rundir / "data" / "dnsmasq.conf").read_text()
    assert "option:router,10.43.0.1" in dhcp and "http://10.43.0.1:8080/api/captive" in dhcp
    renumber(hub, c2, "10.43.0.102", "10.43.0.1")
    captive_phone_sent_to(hub, c2, "http://10.43.0.1:8080")
    # The phone online before keeps its session (by MAC) on its new address.
    renumber(hub, c1, "10.43.0.101", "10.43.0.1")
    wait_for("c1 online again on its new address", lambda: _reaches_upstream(c1), hub)
    same_processes(hub, pids)


def test_pushed_radius_settings_move_the_coa_listener(pushed_hub: tuple[Hub, Broker]) -> None:
    """Issue 20: RADIUS turned on, its CoA port moved, then turned off, by pushes: the
    agent's UDP listener follows each (no restart)."""
    hub, broker = pushed_hub
    pid = hub.agent.pid

    def udp_ports() -> set[int]:
        out = hub.lab.hub_exec("ss", "-H", "-uln").stdout
        return {int(line.split()[3].rpartition(":")[2]) for line in out.splitlines() if line}

    def listening(port: int, yes: bool) -> bool:
        return (port in udp_ports()) == yes

    def radius(port: int | None) -> Callable[[dict[str, Any]], None]:
        def change(wire: dict[str, Any]) -> None:
            wire["radius"] = None
            if port is not None:
                wire["radius"] = {
                    "primary": {"address": UPSTREAM, "secret": "lab-s3cret"},
                    "coa_port": port,
                }

        return change

    for port, bound, closed in ((3799, 3799, None), (3800, 3800, 3799), (None, None, 3800)):
        push(hub, broker, radius(port))
        if bound is not None:
            wait_for(f"CoA listener on {bound}", partial(listening, bound, True), hub)
        if closed is not None:
            wait_for(f"CoA port {closed} closed", partial(listening, closed, False), hub)
    assert hub.agent.poll() is None and hub.agent.pid == pid, "the agent restarted"


def renumber6(hub: Hub, c: Client, prefix: str, gateway: str) -> None:
    """The phone's SLAAC address in the hub's new prefix (from dnsmasq's router
    advertisement: waited for) becomes its address; its old ones go, as they would when
    the old prefix expires, and the hub's new address is its IPv6 gateway."""

    def slaac() -> str | None:
        out = c.exec("ip", "-6", "-o", "addr", "show", "dev", "eth0", "to", prefix).stdout
        return next((w.split("/")[0] for w in out.split() if "/" in w), None)

    new = wait_for(f"{c.name} gets an address in {prefix} from the hub's RA", slaac, hub)
    hub.lab.ip(c.ns, "-6", "addr", "flush", "dev", "eth0", "to", f"{c.ip6}/64")
    hub.lab.ip(c.ns, "-6", "route", "replace", "default", "via", gateway)
    c.ip6 = new


# The lab's DNS query over IPv6: the upstream resolver listens on IPv4 only, so an answer
# to a query sent to its IPv6 address comes from the hub's resolver, by nft's redirect.
DNS_QUERY6 = DNS_QUERY.replace("socket.AF_INET,", "socket.AF_INET6,")


def captive_dns6_lands_on_the_hub(c: Client) -> bool:
    r = c.exec("python3", "-c", DNS_QUERY6, "example.test", UPSTREAM6, timeout=10)
    print(c.name, "DNS over IPv6:", r.returncode, r.stdout.strip(), r.stderr[-200:])
    return r.stdout.strip() == DOMAINS["example.test"]


def _reaches_upstream6(c: Client) -> bool:
    r = c.curl(f"http://[{UPSTREAM6}]/", "-6", timeout=3)
    return r.returncode == 0 and "upstream internet" in r.stdout


def test_a_pushed_lan_ipv6_address_is_followed_without_a_restart(
    pushed_hub: tuple[Hub, Broker],
) -> None:
    """``network.lan.address6`` moved: the interface, dnsmasq (its RA names the new prefix,
    phones take an address in it), the library's nginx and the kernel's redirect (to the
    interface's first address) and the portal's IPv6 listener follow: a captive phone's
    IPv6 web request is sent to the portal on the new address; its DNS lands on the hub's
    resolver and it cannot reach the internet."""
    hub, broker = pushed_hub
    c1, c2 = hub.lab.clients
    pids = online_phone(hub)
    assert _reaches_upstream6(c1) and not _reaches_upstream6(c2)
    assert captive_dns6_lands_on_the_hub(c2)

    def new_address6(wire: dict[str, Any]) -> None:
        wire["network"]["lan"]["address6"] = "fd43::1/64"

    push(hub, broker, new_address6)
    addrs = hub.lab.hub_exec("ip", "-6", "-o", "addr", "show", "dev", "lan0").stdout
    assert "fd43::1/64" in addrs and "fd42::1/" not in addrs, addrs
    dhcp = (hub.rundir / "data" / "dnsmasq.conf").read_text()
    assert "dhcp-range=fd43::,ra-stateless" in dhcp and "fd42::" not in dhcp, dhcp
    # the "internet" routes the new prefix to the hub, as a delegation would
    hub.lab.ip(hub.lab.upstream_ns, "-6", "route", "replace", "fd43::/64", "via", HUB_WAN6)
    renumber6(hub, c2, "fd43::/64", "fd43::1")
    wait_for(
        "c2's IPv6 DNS on the hub's new address", partial(captive_dns6_lands_on_the_hub, c2), hub
    )
    assert not _reaches_upstream6(c2), "a captive phone reaches the internet over IPv6"

    def sent6() -> bool:
        got = _get(c2, f"http://[{UPSTREAM6}]/", "-6", "-g", timeout=3)[:2]
        print("captive phone over IPv6 got", got)  # shown when the wait fails
        return got == ("302", "http://[fd43::1]:8080/")

    wait_for("a captive phone sent to the portal on fd43::1 over IPv6", sent6, hub)
    code, location, _ = _get(c2, "http://[fd43::1]:8081/", "-6", timeout=3)
    assert (code, location) == ("302", "http://[fd43::1]:8080/content/"), "library not on fd43::1"
    # The phone online before stays online (IPv6 is authorised by MAC), on both families.
    renumber6(hub, c1, "fd43::/64", "fd43::1")
    wait_for("c1 online over IPv6 on its new address", partial(_reaches_upstream6, c1), hub)
    assert _reaches_upstream(c1)
    captive_phone_sent_to(hub, c2, PORTAL)  # over IPv4 nothing moved
    same_processes(hub, pids)
