"""Discovery in the lab: neighbour table and DHCP/ARP frames sniffed on the hub's LAN."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from hub_agent.enforce.discovery import LanSniffer, Observation, merge, read_neighbours
from lab.netns import HUB_LAN, Lab
from tests.conftest import require_lab

pytestmark = pytest.mark.root

DHCP_DISCOVER = r"""
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, get_if_hwaddr, mac2str, sendp
conf.verb = 0
mac = get_if_hwaddr("eth0")
sendp(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / IP(src="0.0.0.0", dst="255.255.255.255")
      / UDP(sport=68, dport=67) / BOOTP(chaddr=mac2str(mac), xid=42)
      / DHCP(options=[("message-type", "discover"), ("hostname", b"phone-amy"), "end"]),
      iface="eth0")
"""


def test_neighbours_and_sniffed_dhcp_arp_merge() -> None:
    require_lab()
    with Lab.create(clients=2, nat=False, http=False, dns=False) as lab:
        c1, c2 = lab.clients
        seen: list[Observation] = []
        sniffer = LanSniffer("lan0", seen.append, netns=lab.hub_ns)
        handled: list[Any] = []  # what reached Python at all
        parse = sniffer._handle

        def counting(pkt: Any) -> None:
            handled.append(pkt)
            parse(pkt)

        sniffer._handle = counting  # type: ignore[method-assign]
        sniffer.start()
        try:
            c1.exec("ip", "neigh", "flush", "all")
            assert c1.exec("ping", "-c", "1", "-W", "1", HUB_LAN).returncode == 0  # ARP first
            assert c2.exec("ping", "-c", "1", "-W", "1", HUB_LAN).returncode == 0
            r = c1.exec(sys.executable, "-c", DHCP_DISCOVER, timeout=20)
            assert r.returncode == 0, r.stderr[-500:]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(o.source == "dhcp" for o in seen):
                time.sleep(0.1)
        finally:
            sniffer.stop()
        # the kernel's filter let only ARP and DHCP up to Python, not the pings' ICMP
        from scapy.layers.dhcp import BOOTP
        from scapy.layers.l2 import ARP, Ether

        frames = [p if isinstance(p, Ether) else Ether(bytes(p)) for p in handled]
        assert frames and all(ARP in f or BOOTP in f for f in frames), frames
        neigh = read_neighbours("lan0", netns=lab.hub_ns)
        assert {(o.mac, o.ip) for o in neigh if o.ip} >= {(c1.mac, c1.ip), (c2.mac, c2.ip)}
        assert any(o.source == "arp" and o.mac == c1.mac and o.ip == c1.ip for o in seen), seen
        devices = merge({}, [*seen, *neigh])
        assert devices[c1.mac].hostname == "phone-amy"
        assert devices[c1.mac].ip == c1.ip and devices[c2.mac].ip == c2.ip
        assert {"neigh", "arp", "dhcp"} <= devices[c1.mac].sources
