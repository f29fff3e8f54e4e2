"""IP -> MAC from the kernel's neighbour table on the LAN interface (pyroute2).

The portal only knows the IP a request came from; the agent resolves the MAC itself, so a
device cannot claim another's identity through the portal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from typing import Any

from pyroute2 import IPRoute, NetNS

from hub_agent.config import normalise_mac


class NeighbourTable:
    def __init__(self, interface: str, netns: str | None = None) -> None:
        self.interface = interface
        self.netns = netns
        self._lock = threading.Lock()
        self._ipr: Any = None

    def _conn(self) -> Any:
        if self._ipr is None:
            self._ipr = NetNS(self.netns) if self.netns else IPRoute()
        return self._ipr

    def mac_for_ip(self, ip: str) -> str | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        family = 10 if addr.version == 6 else 2
        with self._lock:
            ipr = self._conn()
            idx = ipr.link_lookup(ifname=self.interface)
            if not idx:
                return None
            for n in ipr.get_neighbours(family=family, ifindex=idx[0], dst=str(addr)):
                lladdr = n.get_attr("NDA_LLADDR")
                if lladdr:
                    with contextlib.suppress(ValueError):
                        return normalise_mac(lladdr)
        return None

    def close(self) -> None:
        with self._lock:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None
