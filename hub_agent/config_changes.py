"""What a new config changes on a running hub, as data (pure): the agent applies it thinly.

A pushed config must take effect without restarting the agent (phones' sessions live in
its kernel state and database). ``plan_changes(old, new)`` says which running parts must
follow and how; ``Agent.apply_config`` carries the plan out:

- the kernel (nft table and tc trees) is always re-rendered from the new config and
  reconciled with the database: the captive redirect's port, the LAN subnet and plans
  follow, and the health check compares the kernel with the new plan;
- the LAN interface moves to the new address before anything binds it (dnsmasq, the
  portal, the library's nginx), and the old address is dropped after: the hub answers on
  one address; its IPv6 address (``network.lan.address6``: added, removed or changed)
  moves the same way, in the same steps;
- dnsmasq restarts only when its rendered config differs (DHCP range, router, DNS, the
  RFC 8910 option 114 URL with the portal's address and port, the walled-garden sets);
- the portal re-binds by itself when the agent's config copy names another address or
  port (captive_portal/live_config.py); the copy is written after the address moved;
- the RADIUS CoA/Disconnect listener starts, stops, re-binds (address or port) or only
  takes the new servers, secrets and plans;
- what a running process cannot follow (interface names, the agent's socket, the data
  directory) is named, so the log says a restart is needed for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hub_agent.config import HubConfig
from hub_agent.enforce.dnsmasq import render_dnsmasq
from hub_agent.portal_view import listen_changes

RadiusStep = Literal["start", "stop", "rebind", "update"]


@dataclass(frozen=True)
class LanMove:
    """The LAN interface's addresses change: add the new ones, then remove the old ones.

    ``old == new`` when only the IPv6 address moves; ``old6``/``new6`` None: no IPv6
    address before/after (the same when it does not move)."""

    interface: str
    old: ipaddress.IPv4Interface
    new: ipaddress.IPv4Interface
    old6: ipaddress.IPv6Interface | None = None
    new6: ipaddress.IPv6Interface | None = None

    @property
    def moves4(self) -> bool:
        return self.old != self.new

    @property
    def moves6(self) -> bool:
        return self.old6 != self.new6

    @property
    def reprefixes6(self) -> bool:
        """Same IPv6 address, another prefix: the kernel holds one entry per IPv6 address
        (an add is EEXIST, a replace keeps the old prefix), so the old goes first."""
        o, n = self.old6, self.new6
        return o is not None and n is not None and o.ip == n.ip and o != n


@dataclass(frozen=True)
class ConfigChanges:
    lan_move: LanMove | None = None
    dnsmasq: bool = False  # its rendered config differs: restart it
    # the fields moving the portal's listeners (it re-binds by itself, following the copy;
    # the agent then waits for its word: hub_agent/portal_follow.py)
    portal_listen: tuple[str, ...] = ()
    radius: RadiusStep | None = None
    restart_needed: tuple[str, ...] = ()  # fields that only a restart of the agent applies


def _coa_endpoint(config: HubConfig) -> tuple[str, int] | None:
    r = config.radius
    if r is None or r.coa_port is None:
        return None
    return (r.coa_listen, r.coa_port)


def radius_step(old: HubConfig, new: HubConfig) -> RadiusStep | None:
    """How the RADIUS side follows: accounts and the CoA listener (None: unchanged)."""
    if old.radius == new.radius and old.plans == new.plans and old.hub == new.hub:
        return None  # the listener's servers, secrets, NAS identity and plans are the same
    if new.radius is None:
        return None if old.radius is None else "stop"
    if old.radius is None:
        return "start"
    if _coa_endpoint(old) != _coa_endpoint(new):
        return "rebind"
    return "update"


def plan_changes(
    old: HubConfig, new: HubConfig, upstream_old: Sequence[str], upstream_new: Sequence[str]
) -> ConfigChanges:
    """The steps from ``old`` to ``new``; ``upstream_*``: each config's upstream resolvers."""
    lan_old, lan_new = old.network.lan, new.network.lan
    move = None
    moved = (lan_old.address, lan_old.address6) != (lan_new.address, lan_new.address6)
    if moved and lan_old.interface == lan_new.interface:
        move = LanMove(
            lan_new.interface, lan_old.address, lan_new.address, lan_old.address6, lan_new.address6
        )
    restart = tuple(
        name
        for name, a, b in (
            ("network.lan.interface", lan_old.interface, lan_new.interface),
            ("network.wan.interface", old.network.wan.interface, new.network.wan.interface),
            ("portal.agent_socket", old.portal.agent_socket, new.portal.agent_socket),
            ("data_dir", old.data_dir, new.data_dir),
        )
        if a != b
    )
    return ConfigChanges(
        lan_move=move,
        dnsmasq=render_dnsmasq(old, upstream_old) != render_dnsmasq(new, upstream_new),
        portal_listen=listen_changes(old, new),
        radius=radius_step(old, new),
        restart_needed=restart,
    )
