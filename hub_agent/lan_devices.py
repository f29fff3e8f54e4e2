"""Who is on the LAN, for the caretaker's dashboard: discovery wired to the sessions store.

Every pass (on the agent's worker thread) folds three sources into device records with
``discovery.merge``: the kernel's neighbour table, the DHCP/ARP frames the scapy sniffer
saw since the last pass, and dnsmasq's lease file (hostnames). Only records that changed
are written. The sniffer thread only appends to a bounded queue; it never touches SQLite.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

from hub_agent.config import HubConfig
from hub_agent.enforce import discovery
from hub_agent.enforce.discovery import Device, LanSniffer, Observation
from hub_agent.enforce.dnsmasq import leases_path, parse_leases
from hub_agent.sessions.service import SessionService

log = logging.getLogger(__name__)

SNIFFED_MAX = 10_000  # frames kept between passes (a flood must not grow memory)


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
        self._sniffed: collections.deque[Observation] = collections.deque(maxlen=SNIFFED_MAX)
        self._sniffer: LanSniffer | None = None
        if sniff:
            self._sniffer = LanSniffer(
                config.network.lan.interface, self._sniffed.append, netns=netns
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
        seen = discovery.read_neighbours(self.config.network.lan.interface, self.netns, now)
        while self._sniffed:  # deque ends are thread-safe against the sniffer's append
            seen.append(self._sniffed.popleft())
        merged = discovery.merge(self.known, seen)
        # a lease names a device that is here; it does not say that it is here
        merged = discovery.merge(merged, [o for o in self._leases() if o.mac in merged])
        fresh = discovery.changed(self.known, merged)
        self.known = merged
        return self.sessions.record_devices(fresh)
