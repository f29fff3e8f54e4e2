"""Pure planner: per-device shaping as HTB trees (download on the LAN iface, upload on the WAN).

Tree on each side (rates in kbit/s, the side's uplink capacity ``U``)::

    1:    htb qdisc, default 1:21
    1:1   uplink       rate U        ceil U
      1:10  staff      rate U*s%     ceil U     <- staff grants' IPs (guaranteed share)
      1:20  community  rate U-U*s%   ceil U
        1:21  unclassified (pre-login walled garden)  rate 8     ceil U
        1:<slot> one per device       rate FAIR  ceil plan     <- skb priority set by nft
    1:2   local        rate LOCAL    ceil LOCAL <- from the hub itself (portal, content)

Devices are classified by the firewall, not by tc filters: as nft forwards a packet it sets
the packet's priority to the device's class (map ``prio_up`` by source MAC for uploads,
``prio_dn`` by the connection's mark for downloads), and HTB honours skb->priority before
any filter. So a device costs one class per side and no filter: per-device u32 filters sat
in one list of priorities that every login and every unclassified packet walked, which
made logins slower as devices accumulated. The only filters are fixed: the hub's own
addresses (local class) and the staff devices' addresses.
(An IFB fed from the LAN bridge's ingress was the first design for uploads; on the lab
kernel packets re-injected by the IFB reach conntrack as INVALID, which breaks NAT and the
per-device accounting, so upload is shaped where it leaves the hub instead.)

Each device class is guaranteed an equal part of the community's capacity: its rate is the
community rate divided among the devices active now (``fair_kbit``), its quantum one
Ethernet frame, so a busy device gets its share from HTB's guarantee and not from the
order in which borrowers happen to be served. (A tiny rate for every class left the whole
share to borrowing; over deep 1,000-packet leaves one of three equal downloads regularly
starved at a tenth of its share.) The rate follows the number of active devices in the
accounting pass (``Enforcer.rebalance``), not at each login, so a login stays O(1); what a
device does not use is borrowed by the others up to each plan's ceiling. Leaves are
fq_codel, or a pfifo holding about 100 ms at the plan's ceiling where the kernel lacks it.
Device classes are keyed by the device's slot (tc minor), so adding or removing one device
touches only its own class and leaf. Staff devices are classified by nftables too (by MAC,
through their connections' mark), so they need no per-address filter.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hub_agent.config import HubConfig
from hub_agent.enforce.model import DesiredState, Grant

ROOT = 0x10000  # 1:
UPLINK = 0x10001  # 1:1
LOCAL = 0x10002  # 1:2
STAFF = 0x10010  # 1:10
COMMUNITY = 0x10020  # 1:20
UNCLASSIFIED = 0x10021  # 1:21 (HTB default)
DEFAULT_MINOR = 0x21

MIN_RATE_KBIT = 8  # HTB's floor for a class's guarantee
QUANTUM = 1514  # one Ethernet frame, the same for every class -> equal rounds when borrowing
LEAF_QUEUE_S = 0.1  # a pfifo leaf holds about this long at the class's ceiling
LEAF_MIN_PKTS, LEAF_MAX_PKTS = 10, 1000
LOCAL_KBIT = 1_000_000  # hub <-> LAN traffic is not limited by the uplink
PRIO_LOCAL = 1

ETH_P_ALL = 0x0003


@dataclass(frozen=True)
class TcClass:
    classid: int
    parent: int
    rate_kbit: int
    ceil_kbit: int
    quantum: int | None = None
    leaf: bool = True  # gets an fq_codel leaf qdisc with handle (minor << 16)

    @property
    def leaf_limit(self) -> int:
        """Packets a pfifo leaf holds: ~LEAF_QUEUE_S at the ceiling (short queues keep a
        device's TCP loop tight; 1,000 packets at 1 Mbit/s is 12 s of queue)."""
        pkts = int(self.ceil_kbit * 1000 / 8 * LEAF_QUEUE_S / 1514)
        return max(LEAF_MIN_PKTS, min(LEAF_MAX_PKTS, pkts))


@dataclass(frozen=True)
class TcFilter:
    prio: int
    protocol: int
    keys: tuple[str, ...]  # u32 keys "value/mask+offset" (offset from the network header)
    target: int


@dataclass(frozen=True)
class TcSide:
    dev: str
    classes: tuple[TcClass, ...]
    filters: tuple[TcFilter, ...]


@dataclass(frozen=True)
class TcPlan:
    down: TcSide  # egress of the LAN interface
    up: TcSide  # egress of the WAN interface (classes only: nft sets the priority)
    lan: str
    wan: str


def ip_keys(addr: str, dst: bool) -> tuple[str, ...]:
    """u32 keys (offsets from the network header) matching one IPv4/IPv6 address.

    Filters use protocol "all" so one prio holds a device's v4 and v6 filters (deleted
    together); the IP version nibble keeps a v4 key from matching inside a v6 header.
    (MAC keys would need negative offsets, which pyroute2's u32 key packer cannot encode,
    and this kernel offers no flower/basic classifier.)
    """
    ip = ipaddress.ip_address(addr)
    raw = ip.packed
    if ip.version == 4:
        off = 16 if dst else 12
        keys = ["0x40000000/0xf0000000+0"]
    else:
        off = 24 if dst else 8
        keys = ["0x60000000/0xf0000000+0"]
    for i in range(0, len(raw), 4):
        keys.append(f"0x{int.from_bytes(raw[i : i + 4], 'big'):08x}/0xffffffff+{off + i}")
    return tuple(keys)


def staff_kbit(config: HubConfig, total: int) -> int:
    return max(8, total * config.staff_share_pct // 100)


def reserved_staff_kbit(config: HubConfig, total: int, staff_busy: bool) -> int:
    """The staff class's guarantee: its share while a staff device is busy, else HTB's
    floor, so idle staff capacity is *guaranteed* to the active community devices rather
    than left to borrowing (HTB serves borrowers unevenly: one of three equal downloads
    took half of another's rate). The accounting pass moves it within seconds."""
    return staff_kbit(config, total) if staff_busy else MIN_RATE_KBIT


def community_kbit(config: HubConfig, down: bool, staff_busy: bool = True) -> int:
    wan = config.network.wan
    total = wan.down_kbit if down else wan.up_kbit
    return max(8, total - reserved_staff_kbit(config, total, staff_busy))


def fair_kbit(community: int, active: int) -> int:
    """Each active device's guarantee: an equal part of the community's capacity."""
    return max(MIN_RATE_KBIT, community // max(1, active))


def device_class(grant: Grant, slot: int, down: bool, fair: int) -> TcClass:
    ceil = grant.down_kbit if down else grant.up_kbit
    return TcClass(slot | ROOT, COMMUNITY, min(fair, ceil), ceil, QUANTUM)


def _side(
    config: HubConfig,
    state: DesiredState,
    slots: dict[str, int],
    dev: str,
    total: int,
    down: bool,
    active: int,
    staff_busy: bool,
) -> TcSide:
    staff = reserved_staff_kbit(config, total, staff_busy)
    fair = fair_kbit(max(8, total - staff), active)
    classes = [
        TcClass(UPLINK, ROOT, total, total, leaf=False),
        TcClass(LOCAL, ROOT, LOCAL_KBIT, LOCAL_KBIT),
        TcClass(STAFF, UPLINK, staff, total),
        TcClass(COMMUNITY, UPLINK, max(8, total - staff), total, leaf=False),
        TcClass(UNCLASSIFIED, COMMUNITY, 8, total, QUANTUM),
    ]
    lan = config.network.lan
    hub_addrs = [str(lan.address.ip)] + ([str(lan.address6.ip)] if lan.address6 else [])
    filters: list[TcFilter] = []
    if down:  # devices and staff are classified by nft (skb priority): module docstring
        filters += [
            TcFilter(PRIO_LOCAL, ETH_P_ALL, ip_keys(a, dst=False), LOCAL) for a in hub_addrs
        ]
    for g in sorted((g for g in state.grants if not g.staff), key=lambda g: slots[g.mac]):
        classes.append(device_class(g, slots[g.mac], down, fair))
    return TcSide(dev, tuple(classes), tuple(filters))


def render_tc(
    config: HubConfig,
    state: DesiredState,
    slots: dict[str, int],
    active: int = 1,
    staff_busy: bool = True,
) -> TcPlan:
    """The whole shaping plan; ``slots`` come from nft_plan.assign_slots (shared with nft),
    ``active`` is how many devices share the community's capacity now, ``staff_busy``
    whether the staff's guarantee is held for them (``reserved_staff_kbit``)."""
    lan = config.network.lan.interface
    wan = config.network.wan
    return TcPlan(
        down=_side(config, state, slots, lan, wan.down_kbit, True, active, staff_busy),
        up=_side(config, state, slots, wan.interface, wan.up_kbit, False, active, staff_busy),
        lan=lan,
        wan=wan.interface,
    )


Applied = dict[tuple[str, int], TcClass]  # (interface, classid) -> the class as last set


def applied_of(plan: TcPlan) -> Applied:
    """Every class of a plan, as ``changed_guarantees`` keys them (after a full apply)."""
    return {(side.dev, c.classid): c for side in (plan.down, plan.up) for c in side.classes}


def changed_guarantees(applied: Applied, plan: TcPlan) -> list[tuple[str, TcClass]]:
    """The staff, community and device classes whose rates differ from what was last set,
    in plan order: a rebalance changes only these (a device whose plan's ceiling caps its
    guarantee keeps its class however many devices share the uplink)."""
    return [
        (side.dev, c)
        for side in (plan.down, plan.up)
        for c in side.classes
        if c.parent in (UPLINK, COMMUNITY) and applied.get((side.dev, c.classid)) != c
    ]
