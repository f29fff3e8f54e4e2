"""Who is on the LAN, for the caretaker's dashboard: discovery wired to the sessions store.

Every pass (on the agent's worker thread) folds three sources into device records with
``discovery.merge``: the kernel's neighbour table, the DHCP/ARP frames the scapy sniffer
saw since the last pass, and dnsmasq's lease file (hostnames). Only records that changed
are written. The sniffer thread only appends to a bounded queue; it never touches SQLite.

The hub itself is never a device: the sniffer sees its own ARP and DHCP replies, so
frames from the LAN interface's own MAC or carrying the hub's own addresses are dropped
before the merge (``not_the_hub``), and a record left by an older agent is removed.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from hub_agent.config import HubConfig, normalise_mac
from hub_agent.enforce import discovery
from hub_agent.enforce.discovery import Device, LanSniffer, Observation
from hub_agent.enforce.dnsmasq import leases_path, parse_leases
from hub_agent.sessions.service import SessionService

log = logging.getLogger(__name__)

SNIFFED_MAX = 10_000  # frames kept between passes (a flood must not grow memory)


def hub_addresses(config: HubConfig) -> frozenset[str]:
    lan = config.network.lan
    own = {str(lan.address.ip)}
    if lan.address6 is not None:
        own.add(str(lan.address6.ip))
    return frozenset(own)


def not_the_hub(
    observations: Iterable[Observation], macs: frozenset[str], addresses: frozenset[str]
) -> list[Observation]:
    """Observations of other devices only (pure): the hub's own MAC or addresses out."""
    return [
        o
        for o in observations
        if o.mac not in macs and o.ip not in addresses and o.ip6 not in addresses
    ]


def link_macs(ifname: str, netns: str | None = None) -> frozenset[str]:
    """The MAC address(es) of the hub's own LAN interface (empty if it is missing)."""
    from pyroute2 import IPRoute, NetNS

    ipr: Any = NetNS(netns) if netns else IPRoute()
    try:
        out = set()
        for link in ipr.get_links(*ipr.link_lookup(ifname=ifname)):
            with contextlib.suppress(ValueError, TypeError):
                out.add(normalise_mac(link.get_attr("IFLA_ADDRESS")))
        return frozenset(out)
    finally:
        ipr.close()


class LanDevices:
    def __init__(
        self,
        config: HubConfig,
        sessions: SessionService,
        netns: str | None = None,
        sniff: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.netns = netns
        self.clock = clock
        self.known: dict[str, Device] = {}
        self.own_macs: frozenset[str] = frozenset()
        self._sniffed: collections.deque[Observation] = collections.deque(maxlen=SNIFFED_MAX)
        self._sniffer: LanSniffer | None = None
        if sniff:
            self._sniffer = LanSniffer(
                config.network.lan.interface, self._sniffed.append, netns=netns
            )

    def hub_macs(self) -> frozenset[str]:
        return self.own_macs

    def _learn_own(self) -> None:
        try:
            macs = link_macs(self.config.network.lan.interface, self.netns)
        except OSError as e:  # the next pass tries again; addresses still filter
            log.warning("LAN interface's own MAC not read: %s", e)
            return
        if macs and macs != self.own_macs:
            self.own_macs = macs
            # a hub recorded (even blocked) by an older agent: gone
            own = [*macs, *hub_addresses(self.config)]
            marks = ",".join("?" * len(own))
            self.sessions.conn.execute(
                f"DELETE FROM devices WHERE mac IN ({marks}) OR ip IN ({marks})", (*own, *own)
            )

    def start(self) -> None:
        if self._sniffer is None:
            return
        try:
            self._sniffer.start()
        except OSError as e:  # no CAP_NET_RAW or no interface: neighbours and leases remain
            log.warning("DHCP/ARP sniffer not started: %s", e)
            self._sniffer = None

    def stop(self) -> None:
        if self._sniffer is not None:
            self._sniffer.stop()

    def _leases(self) -> list[Observation]:
        try:
            text = leases_path(self.config).read_text()
        except OSError:
            return []
        return discovery.lease_observations(parse_leases(text), self.clock())

    def poll(self) -> int:
        """One pass; returns how many device records were written."""
        now = self.clock()
        if not self.own_macs:
            self._learn_own()
        seen = discovery.read_neighbours(self.config.network.lan.interface, self.netns, now)
        while self._sniffed:  # deque ends are thread-safe against the sniffer's append
            seen.append(self._sniffed.popleft())
        seen = not_the_hub(seen, self.own_macs, hub_addresses(self.config))
        merged = discovery.merge(self.known, seen)
        # a lease names a device that is here; it does not say that it is here
        merged = discovery.merge(merged, [o for o in self._leases() if o.mac in merged])
        fresh = discovery.changed(self.known, merged)
        self.known = merged
        return self.sessions.record_devices(fresh)
