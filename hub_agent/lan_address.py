"""Move the LAN interface to a new IPv4 address (a pushed ``network.lan.address``).

Thin: the decision is ``config_changes.plan_changes``. The new address is added before
anything binds it (dnsmasq, the portal) and the old one removed once they have moved, so
the hub answers on one address, and nft's ``redirect`` (the interface's first address)
lands on the portal's new socket. Phones holding a lease in the old subnet lose their
gateway; dnsmasq (authoritative) NAKs their renewal and gives them a new lease, and their
sessions, keyed by MAC, stay authorised.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from pyroute2 import IPRoute, NetlinkError, NetNS

from hub_agent.config_changes import LanMove

log = logging.getLogger(__name__)


class LanAddress:
    def __init__(self, move: LanMove, netns: str | None = None) -> None:
        self.move = move
        self.netns = netns

    def _run(self, command: str, address: Any, ignore: int) -> None:
        ipr: Any = NetNS(self.netns) if self.netns else IPRoute()
        try:
            idx = ipr.link_lookup(ifname=self.move.interface)
            if not idx:
                raise RuntimeError(f"LAN interface {self.move.interface} not found")
            ipr.addr(
                command, index=idx[0], address=str(address.ip), prefixlen=address.network.prefixlen
            )
        except NetlinkError as e:
            if e.code != ignore:  # already there / already gone: the step is done
                raise
        finally:
            ipr.close()

    def add_new(self) -> None:
        log.info("LAN %s: adding %s", self.move.interface, self.move.new)
        self._run("add", self.move.new, errno.EEXIST)

    def remove_old(self) -> None:
        log.info("LAN %s: removing %s", self.move.interface, self.move.old)
        self._run("del", self.move.old, errno.EADDRNOTAVAIL)
