"""Move the LAN interface to new addresses (a pushed ``network.lan.address``/``address6``).

Thin: the decision is ``config_changes.plan_changes``. The new addresses are added before
anything binds them (dnsmasq, the portal, the library's nginx) and the old ones removed
once they have moved, so the hub answers on one address per family, and nft's ``redirect``
(the interface's first address: a new IPv6 global address goes before the old) lands on
the new one. Phones holding a lease in the old subnet lose their gateway; dnsmasq
(authoritative) NAKs their renewal and gives them a new lease, and their sessions, keyed by
MAC, stay authorised. Phones' IPv6 addresses follow the new prefix in dnsmasq's router
advertisements; IPv6 is authorised by MAC, so an online phone stays online.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from typing import Any

from pyroute2 import IPRoute, NetlinkError, NetNS
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from hub_agent.config_changes import LanMove

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class LanAddress:
    def __init__(self, move: LanMove, netns: str | None = None) -> None:
        self.move = move
        self.netns = netns

    def _run(self, command: str, address: Address, ignore: int) -> None:
        log.info("LAN %s: %s %s", self.move.interface, command, address)
        extra: dict[str, Any] = {}
        if command == "add" and address.version == 6:
            # No duplicate address detection: a tentative address refuses binds, and
            # dnsmasq and nginx bind it in this same apply (the hub owns its LAN prefix).
            extra["flags"] = IFA_F_NODAD
        ipr: Any = NetNS(self.netns) if self.netns else IPRoute()
        try:
            idx = ipr.link_lookup(ifname=self.move.interface)
            if not idx:
                raise RuntimeError(f"LAN interface {self.move.interface} not found")
            ipr.addr(
                command,
                index=idx[0],
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                **extra,
            )
        except NetlinkError as e:
            if e.code != ignore:  # already there / already gone: the step is done
                raise
        finally:
            ipr.close()

    def add_new(self) -> None:
        m = self.move
        if m.moves4:
            self._run("add", m.new, errno.EEXIST)
        if m.moves6 and m.new6 is not None:
            if m.reprefixes6 and m.old6 is not None:
                self._run("del", m.old6, errno.EADDRNOTAVAIL)
            self._run("add", m.new6, errno.EEXIST)

    def remove_old(self) -> None:
        m = self.move
        if m.moves4:
            self._run("del", m.old, errno.EADDRNOTAVAIL)
        if m.moves6 and m.old6 is not None and not m.reprefixes6:
            self._run("del", m.old6, errno.EADDRNOTAVAIL)
