"""DHCP (with RFC 8910 option 114) and DNS from the hub, and walled-garden domains."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from hub_agent.enforce.dnsmasq import DnsmasqRunner, captive_api_url, leases_path, parse_leases
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState
from lab.netns import DNS_QUERY, DOMAINS, HUB_LAN, UPSTREAM, Lab
from tests.conftest import require_lab
from tests.linux.test_enforce_helpers import (
    PORTAL_MARK,
    WALLED_DOMAIN,
    grant,
    lab_config,
    reaches,
    start_portal,
)

pytestmark = pytest.mark.root

DHCP_CLIENT = r"""
import json, random, sys, time
from scapy.all import BOOTP, DHCP, IP, UDP, AsyncSniffer, Ether, conf, get_if_hwaddr, mac2str, sendp
conf.checkIPaddr = False
conf.verb = 0
iface = "eth0"
mac = get_if_hwaddr(iface)
xid = random.randint(1, 2**31)
def ask(kind, extra):
    pkt = (Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / IP(src="0.0.0.0", dst="255.255.255.255")
           / UDP(sport=68, dport=67) / BOOTP(chaddr=mac2str(mac), xid=xid, flags=0x8000)
           / DHCP(options=[("message-type", kind), *extra,
                           ("param_req_list", [1, 3, 6, 114]), "end"]))
    mine = lambda p: BOOTP in p and p[BOOTP].xid == xid and p[BOOTP].op == 2
    sniffer = AsyncSniffer(iface=iface, count=1, lfilter=mine)
    sniffer.start()
    time.sleep(0.3)
    sendp(pkt, iface=iface)
    sniffer.join(timeout=5)
    if sniffer.running:
        sniffer.stop()
    ans = sniffer.results[0]
    opts = {o[0]: o[1] for o in ans[DHCP].options if isinstance(o, tuple)}
    return ans[BOOTP].yiaddr, opts
offered, opts = ask("discover", [])
acked, ack_opts = ask("request", [("requested_addr", offered), ("server_id", opts["server_id"])])
def text(v):
    return v.decode() if isinstance(v, bytes) else v
print(json.dumps({"offered": offered, "acked": acked, "type": ack_opts["message-type"],
                  "router": text(ack_opts.get("router")), "dns": text(ack_opts.get("name_server")),
                  "114": text(ack_opts.get(114) or ack_opts.get("captive-portal"))}))
"""


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[Lab, Enforcer, DnsmasqRunner]]:
    require_lab()
    with Lab.create(clients=1, nat=False) as built:
        start_portal(built)
        cfg = lab_config(built)
        # as examples/hub.yaml: the government site is walled garden AND zero-rated
        zero = cfg.zero_rated.model_dump(mode="json")
        cfg = lab_config(built, zero_rated={**zero, "domains": [WALLED_DOMAIN]})
        enf = Enforcer(cfg, netns=built.hub_ns, shaping=False)
        enf.reconcile(DesiredState())
        dns = DnsmasqRunner(cfg, [UPSTREAM], netns=built.hub_ns, user="root")
        dns.start()
        try:
            yield built, enf, dns
        finally:
            dns.stop()
            enf.close()


def test_dhcp_lease_with_captive_portal_option(hub: tuple[Lab, Enforcer, DnsmasqRunner]) -> None:
    lab, enf, _ = hub
    c1 = lab.clients[0]
    r = c1.exec(sys.executable, "-c", DHCP_CLIENT, timeout=20)
    assert r.returncode == 0, r.stderr[-800:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["acked"] == got["offered"] and got["type"] == 5  # DHCPACK
    assert got["router"] == HUB_LAN and got["dns"] == HUB_LAN
    assert got["114"] == captive_api_url(enf.config) == f"http://{HUB_LAN}:8080/api/captive"
    leases = parse_leases(leases_path(enf.config).read_text())
    assert [(lease.mac, lease.ip) for lease in leases] == [(c1.mac, got["acked"])]


def test_dns_answers_from_hub_and_opens_walled_garden_domain(
    hub: tuple[Lab, Enforcer, DnsmasqRunner],
) -> None:
    lab, _, _ = hub
    c1 = lab.clients[0]
    target = DOMAINS[WALLED_DOMAIN]
    # not resolved yet: its address is just "the internet", port 80 lands on the portal
    assert PORTAL_MARK in c1.curl(f"http://{target}/").stdout
    r = c1.exec("python3", "-c", DNS_QUERY, WALLED_DOMAIN, HUB_LAN)
    assert r.stdout.strip() == target, r.stderr
    # the hub's resolver put the answer into the walled-garden set: reachable pre-login
    listing = lab.hub_exec("nft", "-j", "list", "set", "inet", "relais", "wg4").stdout
    assert target in listing
    assert reaches(c1, f"http://{target}/")
    # DNS to another resolver is answered by the hub anyway (redirected) before login
    r = c1.exec("python3", "-c", DNS_QUERY, "example.test", UPSTREAM)
    assert r.stdout.strip() == DOMAINS["example.test"]
    assert not reaches(c1, f"http://{DOMAINS['example.test']}/")


def test_reload_keeps_dynamic_sets(hub: tuple[Lab, Enforcer, DnsmasqRunner]) -> None:
    lab, enf, dns = hub
    c1 = lab.clients[0]
    c1.exec("python3", "-c", DNS_QUERY, WALLED_DOMAIN, HUB_LAN)
    # a full nft reload (skeleton changed) carries resolver-learned addresses over
    lab.hub_exec("nft", "flush", "chain", "inet", "relais", "to_lan")
    diff = enf.reconcile(DesiredState())
    assert not diff.skeleton_ok
    assert reaches(c1, f"http://{DOMAINS[WALLED_DOMAIN]}/")
    dns.reload()
    r = c1.exec("python3", "-c", DNS_QUERY, WALLED_DOMAIN, HUB_LAN)
    assert r.stdout.strip() == DOMAINS[WALLED_DOMAIN]


def test_zero_rated_domain_resolved_by_the_hub_is_not_counted(
    hub: tuple[Lab, Enforcer, DnsmasqRunner],
) -> None:
    """Issue 21: a domain both walled garden and zero-rated, resolved through the hub's
    dnsmasq, then downloaded after login: (almost) nothing off the quota."""
    lab, enf, _ = hub
    c1 = lab.clients[0]
    enf.authorize(grant(c1, quota_bytes=50_000_000))
    try:
        r = c1.exec("python3", "-c", DNS_QUERY, WALLED_DOMAIN, HUB_LAN)
        target = r.stdout.strip()
        assert target == DOMAINS[WALLED_DOMAIN], r.stderr
        listing = lab.hub_exec("nft", "-j", "list", "set", "inet", "relais", "zr4").stdout
        assert target in listing  # the zero-rated set got the answer too
        before = enf.counters()[c1.mac]
        size = 2_000_000
        got = c1.curl(f"http://{target}/bytes/{size}", "-o", "/dev/null", "-w",
                      "%{size_download}", timeout=30)  # fmt: skip
        assert int(float(got.stdout.strip() or 0)) == size
        after = enf.counters()[c1.mac]
        charged = (after.up_bytes + after.down_bytes) - (before.up_bytes + before.down_bytes)
        assert charged < size // 100, charged
    finally:
        enf.deauthorize(c1.mac)
