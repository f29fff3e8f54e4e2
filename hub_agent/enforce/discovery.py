"""Who is on the LAN: MAC, IP(s), hostname and last-seen, merged from several sources.

Sources (thin readers): the kernel neighbour table (pyroute2), dnsmasq's lease file, and
DHCP/ARP frames read from a packet socket on the LAN interface (parsed by scapy). Each yields
``Observation``s; ``merge`` (pure) folds them into ``Device`` records, and ``idle_macs``
(pure) says which authorised devices have been quiet longer than their idle timeout, from
the per-device counters the enforcer reads.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hub_agent.config import normalise_mac
from hub_agent.enforce.dnsmasq import Lease
from hub_agent.enforce.model import Counters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    mac: str
    seen_at: float
    source: str  # "neigh" | "lease" | "dhcp" | "arp"
    ip: str | None = None
    ip6: str | None = None
    hostname: str | None = None


@dataclass(frozen=True)
class Device:
    mac: str
    ip: str | None = None
    ip6: tuple[str, ...] = ()
    hostname: str | None = None
    last_seen: float = 0.0
    sources: frozenset[str] = field(default_factory=frozenset)


def _clean_hostname(name: str | None) -> str | None:
    if not name:
        return None
    name = "".join(ch for ch in name.strip() if ch.isprintable())[:63]
    return name or None


def merge(known: Mapping[str, Device], observations: Iterable[Observation]) -> dict[str, Device]:
    """Fold observations into device records (pure; input order does not matter).

    The newest observation of an IPv4 address wins (DHCP can move a device); IPv6
    addresses accumulate (privacy addresses come and go; the newest 8 kept); a hostname
    is only ever replaced by another non-empty one; last_seen only moves forward.
    """
    out = dict(known)
    ip_time: dict[str, float] = {}
    for ob in sorted(observations, key=lambda o: o.seen_at):
        try:
            mac = normalise_mac(ob.mac)
        except ValueError:
            continue  # broadcast/garbage frames are not devices
        dev = out.get(mac, Device(mac=mac))
        ip, ip6, host = dev.ip, list(dev.ip6), dev.hostname
        if ob.ip and _is_v4(ob.ip) and ob.seen_at >= ip_time.get(mac, 0.0):
            ip = ob.ip
            ip_time[mac] = ob.seen_at
        if ob.ip6 and _is_v6(ob.ip6) and ob.ip6 not in ip6:
            ip6 = [*ip6, ob.ip6][-8:]
        host = _clean_hostname(ob.hostname) or host
        out[mac] = replace(
            dev,
            ip=ip,
            ip6=tuple(ip6),
            hostname=host,
            last_seen=max(dev.last_seen, ob.seen_at),
            sources=dev.sources | {ob.source},
        )
    return out


def _is_v4(a: str) -> bool:
    try:
        ip = ipaddress.IPv4Address(a)
    except ValueError:
        return False
    return not (
        ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255")
    )


def _is_v6(a: str) -> bool:
    try:
        ip = ipaddress.IPv6Address(a)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast)


@dataclass(frozen=True)
class Activity:
    """Last time a device's counted bytes moved, and the totals seen then."""

    total: int
    since: float


def update_activity(
    previous: Mapping[str, Activity], counters: Mapping[str, Counters], now: float
) -> dict[str, Activity]:
    """Pure: a device is active when its byte total changed since the previous reading."""
    out: dict[str, Activity] = {}
    for mac, c in counters.items():
        total = c.up_bytes + c.down_bytes
        prev = previous.get(mac)
        out[mac] = prev if prev is not None and prev.total == total else Activity(total, now)
    return out


def idle_macs(
    activity: Mapping[str, Activity], idle_timeout_s: Mapping[str, float], now: float
) -> list[str]:
    """Authorised devices quiet for longer than their plan's idle timeout (to deauthorise)."""
    return sorted(
        mac
        for mac, act in activity.items()
        if mac in idle_timeout_s and now - act.since > idle_timeout_s[mac]
    )


# --- readers (thin) --------------------------------------------------------------------------

NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # reachable, stale, delay, probe, permanent


def read_neighbours(
    ifname: str, netns: str | None = None, now: float | None = None
) -> list[Observation]:
    """The kernel's neighbour table for the LAN interface (IPv4 and IPv6)."""
    from pyroute2 import IPRoute, NetNS

    ipr: Any = NetNS(netns) if netns else IPRoute()
    seen = time.time() if now is None else now
    out: list[Observation] = []
    try:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return []
        for msg in ipr.get_neighbours(ifindex=idx[0]):
            mac, dst = msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST")
            if not mac or not dst or not msg["state"] & NUD_USABLE:
                continue
            v6 = ":" in dst
            out.append(
                Observation(
                    mac=mac,
                    seen_at=seen,
                    source="neigh",
                    ip=None if v6 else dst,
                    ip6=dst if v6 and not dst.startswith("fe80") else None,
                )
            )
    finally:
        ipr.close()
    return out


def lease_observations(leases: Iterable[Lease], now: float) -> list[Observation]:
    """dnsmasq's current leases (expired ones dropped): MAC, IPv4 and the DHCP hostname.

    A lease says the address is the device's, not that the device is here now, so it is
    stamped with the time the lease was granted at most (expiry - lease time is unknown:
    the neighbour table and the sniffer give the real last-seen)."""
    return [
        Observation(ls.mac, 0.0, "lease", ip=ls.ip, hostname=ls.hostname)
        for ls in leases
        if ls.expires == 0 or ls.expires > now
    ]


def changed(before: Mapping[str, Device], after: Mapping[str, Device]) -> list[Device]:
    """Records worth writing: new devices, a new address or name, or last-seen moved on."""
    return [d for m, d in sorted(after.items()) if before.get(m) != d]


# Classic BPF for "arp or (udp and (port 67 or port 68))" on Ethernet (tcpdump -dd form:
# code, jump-if-true, jump-if-false, k). Without it every frame on the LAN, the whole
# neighbourhood's browsing, went up to Python to be parsed by scapy and thrown away: on a
# small box under a crowd that alone took a large share of a core.
ARP_OR_DHCP: tuple[tuple[int, int, int, int], ...] = (
    (0x28, 0, 0, 12),  # ldh [12]: EtherType
    (0x15, 13, 0, 0x0806),  # ARP -> accept
    (0x15, 0, 11, 0x0800),  # not IPv4 -> reject
    (0x30, 0, 0, 23),  # ldb [23]: IP protocol
    (0x15, 0, 9, 17),  # not UDP -> reject
    (0x28, 0, 0, 20),  # ldh [20]: flags + fragment offset
    (0x45, 7, 0, 0x1FFF),  # a later fragment -> reject
    (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf): IP header length
    (0x48, 0, 0, 14),  # ldh [x+14]: source port
    (0x15, 5, 0, 67),
    (0x15, 4, 0, 68),
    (0x48, 0, 0, 16),  # ldh [x+16]: destination port
    (0x15, 2, 0, 67),
    (0x15, 1, 0, 68),
    (0x06, 0, 0, 0),  # reject
    (0x06, 0, 0, 262144),  # accept (whole frame)
)
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003


def attach_bpf(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...]) -> None:
    """Attach a classic BPF program to a packet socket (SO_ATTACH_FILTER)."""
    insns = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(insns)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def observations_from_packet(pkt: Any, now: float) -> list[Observation]:
    """DHCP requests (client MAC, requested IP, hostname), DHCP ACKs and ARP senders."""
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.l2 import ARP

    out: list[Observation] = []
    if ARP in pkt:
        arp = pkt[ARP]
        if arp.psrc and arp.psrc != "0.0.0.0":
            out.append(Observation(str(arp.hwsrc), now, "arp", ip=str(arp.psrc)))
    elif BOOTP in pkt and DHCP in pkt:
        boot = pkt[BOOTP]
        opts = {o[0]: o[1] for o in pkt[DHCP].options if isinstance(o, tuple) and len(o) == 2}
        chaddr = bytes(boot.chaddr)[:6]
        mac = ":".join(f"{b:02x}" for b in chaddr)
        host = opts.get("hostname")
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        ip: str | None = None
        if boot.op == 2 and opts.get("message-type") == 5:  # ACK: the address is granted
            ip = str(boot.yiaddr)
        elif boot.op == 1:
            ip = str(opts["requested_addr"]) if "requested_addr" in opts else str(boot.ciaddr)
        out.append(Observation(mac, now, "dhcp", ip=ip, hostname=host))
    return out


class LanSniffer:
    """A packet socket on the LAN interface (ARP and DHCP only, filtered in the kernel)
    read by a thread that hands what it learns to a callback."""

    def __init__(
        self,
        ifname: str,
        on_observation: Callable[[Observation], None],
        netns: str | None = None,
    ) -> None:
        self.ifname = ifname
        self.netns = netns
        self.on_observation = on_observation
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _handle(self, pkt: Any) -> None:
        from scapy.layers.l2 import Ether

        if not isinstance(pkt, Ether):
            pkt = Ether(bytes(pkt))  # LAN frames are Ethernet
        for ob in observations_from_packet(pkt, time.time()):
            with self._lock:
                self.on_observation(ob)

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            attach_bpf(sock, ARP_OR_DHCP)  # before bind: nothing else is ever queued
            sock.bind((self.ifname, ETH_P_ALL))
        except OSError:
            sock.close()
            raise
        return sock

    def start(self) -> None:
        # scapy dissects a frame with the layers imported *when it parses it*: load DHCP's
        # before the first frame, or that frame stays raw UDP (filtered, it may be the one)
        import scapy.layers.dhcp
        import scapy.layers.l2  # noqa: F401

        # Open the packet socket here (inside the namespace when asked): a socket stays in
        # the namespace it was created in, whatever thread reads it.
        if self.netns:
            from pyroute2.netns import popns, pushns

            pushns(self.netns)
            try:
                self._sock = self._open()
            finally:
                popns()
        else:
            self._sock = self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lan-sniffer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            try:
                frame = sock.recv(65535)
            except OSError:
                return
            try:
                self._handle(frame)
            except Exception:  # one odd frame must not stop discovery
                log.debug("unparsable LAN frame", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
