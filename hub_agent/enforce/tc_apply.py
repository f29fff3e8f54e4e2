"""Thin applier for tc_plan with pyroute2 (IPRoute, or NetNS for a named namespace).

Only the HTB root qdiscs of the LAN and WAN interfaces are replaced; nothing else.

The leaf qdisc is fq_codel; a kernel built without it (some lab VMs) gets pfifo instead and
the substitution is logged once. A leaf of another kind already in place (left by an
earlier process, which may have fallen back differently) is swapped, not refused: the
kernel answers EINVAL to a "replace" that changes a qdisc's kind. "Already there" on add
and "already gone" on delete count as success, so every operation can be repeated.
``RELAIS_TC_LEAF`` (comma list, e.g. ``pfifo``) overrides the preference: the lab forces
the fallback with it.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from socket import htons
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from hub_agent.enforce.tc_plan import (
    DEFAULT_MINOR,
    ETH_P_ALL,
    ROOT,
    TcClass,
    TcFilter,
    TcPlan,
    TcSide,
)

log = logging.getLogger(__name__)

LEAF_KINDS = ("fq_codel", "pfifo")
# "no such kind" comes back as ENOENT or EOPNOTSUPP, or EINVAL when a leaf is in place
_NO_KIND = (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL)


def leaf_kinds() -> tuple[str, ...]:
    forced = os.environ.get("RELAIS_TC_LEAF", "")
    return tuple(k.strip() for k in forced.split(",") if k.strip()) or LEAF_KINDS


class TcApplier:
    def __init__(
        self,
        netns: str | None = None,
        dry_run: bool = False,
        tracer: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.netns = netns
        self.dry_run = dry_run
        self.tracer = tracer
        self.leaf_kind: str | None = None
        self.leaf_kinds = leaf_kinds()
        self.applied: list[tuple[str, dict[str, Any]]] = []
        self._ipr: Any = None if dry_run else (NetNS(netns) if netns else IPRoute())

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # --- plumbing ------------------------------------------------------------------------
    def _call(self, what: str, *args: Any, ok: tuple[int, ...] = (), **kw: Any) -> Any:
        rec = {"args": args, **kw}
        log.debug("tc %s %s", what, rec)
        if self.tracer:
            self.tracer(what, rec)
        if self.dry_run:
            self.applied.append((what, rec))
            return None
        try:
            return self._ipr.tc(what, *args, **kw)
        except NetlinkError as e:
            if e.code in ok:
                return None
            raise

    def index(self, ifname: str) -> int:
        if self.dry_run:
            return 0
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise RuntimeError(f"interface {ifname} not found")
        return int(found[0])

    # --- pieces --------------------------------------------------------------------------
    def _leaf(self, idx: int, cls: TcClass) -> None:
        kinds = (self.leaf_kind,) if self.leaf_kind else self.leaf_kinds
        for kind in kinds:
            try:
                self._set_leaf(idx, cls, kind)
                if self.leaf_kind is None and kind != self.leaf_kinds[0]:
                    log.warning("kernel has no %s; shaping leaves use %s", self.leaf_kinds[0], kind)
                self.leaf_kind = kind
                return
            except NetlinkError as e:
                if e.code not in _NO_KIND or kind == kinds[-1]:
                    raise

    def _set_leaf(self, idx: int, cls: TcClass, kind: str) -> None:
        handle = (cls.classid & 0xFFFF) << 16
        extra: dict[str, Any] = {"limit": cls.leaf_limit} if kind == "pfifo" else {}
        try:
            self._call("replace", kind, idx, handle=handle, parent=cls.classid, **extra)
        except NetlinkError as e:
            if e.code != errno.EINVAL:
                raise
            # another kind holds the leaf (an earlier process's choice): swap it
            self._call("del", index=idx, handle=handle, parent=cls.classid, ok=(errno.ENOENT,))
            self._call("add", kind, idx, handle=handle, parent=cls.classid, **extra)

    def set_class(self, idx: int, cls: TcClass) -> None:
        """Change a class's rates in place (its leaf and queued packets stay)."""
        self._call("replace-class", "htb", idx, **self._class_kw(cls))

    def _class_kw(self, cls: TcClass) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "handle": cls.classid,
            "parent": cls.parent,
            "rate": f"{cls.rate_kbit}kbit",
            "ceil": f"{cls.ceil_kbit}kbit",
        }
        if cls.quantum:
            kw["quantum"] = cls.quantum
        return kw

    def add_class(self, idx: int, cls: TcClass) -> None:
        self._call("replace-class", "htb", idx, **self._class_kw(cls))
        if cls.leaf:
            self._leaf(idx, cls)

    def add_filter(self, idx: int, f: TcFilter) -> None:
        self._call(
            "add-filter",
            "u32",
            idx,
            parent=ROOT,
            prio=f.prio,
            protocol=f.protocol,
            target=f.target,
            keys=list(f.keys),
        )

    def del_filter_prio(self, idx: int, prio: int, protocol: int = ETH_P_ALL) -> None:
        # No kind (pyroute2 would build u32 options a delete does not take), so "info"
        # must carry prio and protocol itself: without it the kernel deletes every filter.
        self._call(
            "del-filter",
            index=idx,
            parent=ROOT,
            info=htons(protocol) | (prio << 16),
            ok=(errno.ENOENT, errno.EINVAL),
        )

    def del_class(self, idx: int, classid: int) -> None:
        # no kind (pyroute2 would encode HTB rate tables); the leaf qdisc goes with it
        self._call(
            "del-class", index=idx, handle=classid, parent=ROOT, ok=(errno.ENOENT, errno.EINVAL)
        )

    # --- whole plan ----------------------------------------------------------------------
    def apply_side(self, side: TcSide) -> None:
        idx = self.index(side.dev)
        self._call("del", "htb", idx, handle=ROOT, ok=(errno.ENOENT, errno.EINVAL))
        self._call("add", "htb", idx, handle=ROOT, default=DEFAULT_MINOR)
        for cls in side.classes:
            self.add_class(idx, cls)
        for f in side.filters:
            self.add_filter(idx, f)

    def apply(self, plan: TcPlan) -> None:
        """Build both trees from scratch (start, or when the live tree differs)."""
        self.apply_side(plan.down)
        self.apply_side(plan.up)

    def add_device(self, plan: TcPlan, down: TcClass, up: TcClass) -> None:
        """One device's classes (nft classifies its packets: no filter to add)."""
        for dev, cls in ((plan.lan, down), (plan.wan, up)):
            self.add_class(self.index(dev), cls)

    def remove_device(self, plan: TcPlan, slot: int) -> None:
        for dev in (plan.lan, plan.wan):
            self.del_class(self.index(dev), slot | ROOT)

    # --- reading back ----------------------------------------------------------------------
    def live_side(self, dev: str) -> tuple[dict[int, tuple[int, int, int]], set[int]]:
        """{classid: (parent, rate_kbit, ceil_kbit)} and the set of filter prios."""
        if self.dry_run:
            return {}, set()
        idx = self.index(dev)
        classes: dict[int, tuple[int, int, int]] = {}
        for msg in self._ipr.get_classes(idx):
            if msg.get_attr("TCA_KIND") != "htb":
                continue
            parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
            rate = _bytes_per_s(parms["rate"]) * 8 // 1000
            ceil = _bytes_per_s(parms["ceil"]) * 8 // 1000
            parent = int(msg["parent"])
            parent = ROOT if parent == 0xFFFFFFFF else parent  # the kernel says "root"
            classes[int(msg["handle"])] = (parent, rate, ceil)
        prios = set()
        for msg in self._ipr.get_filters(idx, parent=ROOT):
            prios.add(int(msg["info"]) >> 16)
        return classes, prios


def _bytes_per_s(value: Any) -> int:
    # pyroute2 decodes tc_ratespec either as a dict or (0.9) as the bare rate
    return int(value["rate"] if isinstance(value, dict) else value)


def side_view(side: TcSide) -> tuple[dict[int, tuple[int, int, int]], set[int]]:
    """What live_side should read for a planned side."""
    classes = {c.classid: (c.parent, c.rate_kbit, c.ceil_kbit) for c in side.classes}
    return classes, {f.prio for f in side.filters}
