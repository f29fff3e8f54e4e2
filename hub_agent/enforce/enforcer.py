"""The one object the agent daemon drives: desired state in, kernel state (nft + tc) out.

    enf = Enforcer(config, netns=None)        # root on the hub; netns for the lab
    enf.reconcile(DesiredState(...))          # on start: repairs whatever differs
    enf.authorize(grant) / enf.deauthorize(mac) / enf.set_blocked(macs)
    enf.counters()                            # {mac: Counters}, every few seconds
    enf.close()

Inputs are validated before anything touches the kernel (ValueError naming the field).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

from hub_agent.config import HubConfig, normalise_mac
from hub_agent.enforce import nft_plan, tc_plan
from hub_agent.enforce.model import Counters, DesiredState, Grant
from hub_agent.enforce.nft_apply import (
    NftApplier,
    dynamic_elements,
    live_devices,
    objects_of,
    rule_packets,
)
from hub_agent.enforce.nft_plan import LiveDevice
from hub_agent.enforce.nft_view import TableDiff, carry_quotas, diff_views, view_of
from hub_agent.enforce.shares import Shares
from hub_agent.enforce.tc_apply import TcApplier, side_view

log = logging.getLogger(__name__)

MAX_KBIT = 10_000_000
MAX_TIMEOUT_S = 366 * 86_400


def validate_grant(grant: Grant) -> Grant:
    """A normalised copy of ``grant``, or ValueError naming the bad field."""
    try:
        mac = normalise_mac(grant.mac)
    except (ValueError, AttributeError) as e:
        raise ValueError(f"grant.mac: {e}") from None
    ip = grant.ip
    if ip is not None:
        try:
            ip = str(ipaddress.IPv4Address(ip))
        except ValueError:
            raise ValueError(f"grant.ip: not an IPv4 address: {grant.ip!r}") from None
    ip6: list[str] = []
    for a in grant.ip6:
        try:
            ip6.append(str(ipaddress.IPv6Address(a)))
        except ValueError:
            raise ValueError(f"grant.ip6: not an IPv6 address: {a!r}") from None
    for name in ("down_kbit", "up_kbit"):
        v = getattr(grant, name)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_KBIT:
            raise ValueError(
                f"grant.{name}: expected an integer rate in 1..{MAX_KBIT} kbit/s, got {v!r}"
            )
    q = grant.quota_bytes
    if q is not None and (isinstance(q, bool) or not isinstance(q, int) or q < 0):
        raise ValueError(f"grant.quota_bytes: expected None or bytes >= 0, got {q!r}")
    t = grant.timeout_s
    if t is not None and (
        isinstance(t, bool) or not isinstance(t, int) or not 0 < t <= MAX_TIMEOUT_S
    ):
        raise ValueError(f"grant.timeout_s: expected None or 1..{MAX_TIMEOUT_S} seconds, got {t!r}")
    return dataclasses.replace(grant, mac=mac, ip=ip, ip6=tuple(ip6))


def _macs(values: Iterable[str], field: str) -> frozenset[str]:
    out = set()
    for v in values:
        try:
            out.add(normalise_mac(v))
        except (ValueError, AttributeError) as e:
            raise ValueError(f"{field}: {e}") from None
    return frozenset(out)


def sent_since(before: int | None, now: int) -> bool:
    """Did a device send anything between two reads of its auth-set packet counters?
    Unknown before (first read after a start): no claim. A smaller total means its
    elements were re-created (a re-login): any packet since then is activity."""
    if before is None:
        return False
    return now > before or (now < before and now > 0)


class Enforcer:
    def __init__(
        self,
        config: HubConfig,
        netns: str | None = None,
        dry_run: bool = False,
        tracer: Callable[[Any], None] | None = None,
        shaping: bool = True,
    ) -> None:
        self.config = config
        self.netns = netns
        self.dry_run = dry_run
        self.nft = NftApplier(netns=netns, dry_run=dry_run, tracer=tracer)
        self.tc = TcApplier(netns=netns, dry_run=dry_run) if shaping else None
        self._grants: dict[str, Grant] = {}
        self._slots: dict[str, int] = {}
        self._blocked: frozenset[str] = frozenset()
        self._tc_plan: tc_plan.TcPlan | None = None
        self._tc_stale = False
        self._tc_applied: tc_plan.Applied = {}  # what the kernel's classes were last set to
        self._guarantees_due = False  # a rebalance decided new guarantees, not all set yet
        # bytes counted before a full table reload reset the per-element counters, added
        # back by counters() so accounting sees one monotonic counter per device
        self._carried: dict[str, tuple[int, int]] = {}
        self._sent: dict[str, int] = {}  # packets each device had sent at the last read
        self.shares = Shares()  # active devices and staff: the HTB guarantees follow them

    def close(self) -> None:
        if self.tc is not None:
            self.tc.close()

    # --- state --------------------------------------------------------------------------
    def _state(self) -> DesiredState:
        return DesiredState(grants=tuple(self._grants.values()), blocked_macs=self._blocked)

    def validate_state(self, state: DesiredState) -> DesiredState:
        grants = tuple(validate_grant(g) for g in state.grants)
        macs = [g.mac for g in grants]
        dup = sorted({m for m in macs if macs.count(m) > 1})
        if dup:
            raise ValueError(f"state.grants: duplicate MACs {dup}")
        return DesiredState(
            grants=grants, blocked_macs=_macs(state.blocked_macs, "state.blocked_macs")
        )

    # --- reconcile ----------------------------------------------------------------------
    def reconcile(self, state: DesiredState) -> TableDiff:
        """Make the kernel equal the rendering of ``state``; returns what differed.

        Devices are repaired one by one (counters of unchanged devices kept); a table whose
        skeleton differs is reloaded in one transaction with live counters carried over.
        """
        state = self.validate_state(state)
        live = self.nft.list_table()
        have = live_devices(live)
        counted = nft_plan.counted_grants(state)
        slots = nft_plan.assign_slots(
            (g.mac for g in counted), {m: d.slot for m, d in have.items()}
        )
        desired_doc = nft_plan.render_ruleset(self.config, state, slots, dynamic_elements(live))
        diff = diff_views(view_of(desired_doc), view_of(live))
        if not diff.skeleton_ok:
            log.info("nft table differs from plan: full reload")
            quotas = {
                n: (int(o["bytes"]), int(o.get("used", 0)))
                for n, o in objects_of(live, "quota").items()
            }
            self.nft.apply(carry_quotas(desired_doc, quotas))
            carried = {}
            for mac, d in have.items():
                if slots.get(mac) == d.slot:
                    up, down = self._carried.get(mac, (0, 0))
                    carried[mac] = (up + d.up_bytes, down + d.down_bytes)
            self._carried = carried
        elif not diff.equal:
            want = {g.mac: g for g in counted}
            cmds: list[Any] = []
            for mac in diff.extra:
                cmds += nft_plan.device_remove(have[mac])
                self._carried.pop(mac, None)
            for mac in diff.changed:
                if have[mac].slot == slots[mac]:
                    cmds += nft_plan.device_update(have[mac], want[mac])
                else:
                    cmds += nft_plan.device_remove(have[mac])
                    cmds += nft_plan.device_add(want[mac], slots[mac])
                    self._carried.pop(mac, None)
            for mac in diff.missing:
                cmds += nft_plan.device_add(want[mac], slots[mac])
                self._carried.pop(mac, None)
            log.info(
                "nft repair: +%d -%d ~%d devices",
                len(diff.missing),
                len(diff.extra),
                len(diff.changed),
            )
            self.nft.apply(cmds)
        self._grants = {g.mac: g for g in state.grants}
        self._slots = dict(slots)
        self._blocked = state.blocked_macs
        self.shares.assume(len(counted), bool(nft_plan.staff_macs(self.config, state)))
        self._reconcile_tc(state)
        self.isolate_lan_ports()
        return diff

    def _reconcile_tc(self, state: DesiredState) -> None:
        if self.tc is None:
            return
        plan = self._render_tc(state)
        self._tc_plan = plan
        self._tc_stale = False
        if not self.tc_equal():
            log.info("tc trees differ from plan: rebuilding")
            self.tc.apply(plan)
        self._tc_applied = tc_plan.applied_of(plan)

    def tc_equal(self) -> bool:
        """True when the live tc classes and filter prios equal the plan's (both sides)."""
        if self.tc is None or self._tc_plan is None:
            return True
        if self._tc_stale:
            self._tc_plan = self._render_tc(self._state())
            self._tc_stale = False
        try:
            return all(
                self.tc.live_side(side.dev) == side_view(side)
                for side in (self._tc_plan.down, self._tc_plan.up)
            )
        except RuntimeError:  # the IFB does not exist yet
            return False

    def kernel_equals_plan(self) -> bool:
        """Read the kernel back and compare it with the rendering of the current state."""
        live = self.nft.list_table()
        doc = nft_plan.render_ruleset(self.config, self._state(), self._slots)
        diff = diff_views(view_of(doc), view_of(live))
        return diff.equal and self.tc_equal()

    # --- one device -----------------------------------------------------------------------
    def _live_device(self, mac: str) -> LiveDevice | None:
        return live_devices(self.nft.list_table()).get(mac)

    def _known(self, grant: Grant) -> LiveDevice:
        """What this process put in the kernel for a device (removal is idempotent, so an
        element a kernel timeout already dropped does no harm)."""
        old = self._grants.get(grant.mac, grant)
        slot = self._slots[grant.mac]
        auth = nft_plan.auth_elements(old) if old else {}
        return LiveDevice(
            mac=grant.mac,
            slot=slot,
            auth=auth,
            has_quota=bool(old and old.quota_bytes is not None),
        )

    def authorize(self, grant: Grant) -> None:
        """Let one device through at its plan's rates (re-authorising updates it)."""
        grant = validate_grant(grant)
        if grant.staff:
            self._set_staff(grant.mac, True)
            self._grants[grant.mac] = grant
            return
        if grant.mac in self._slots and grant.mac in self._grants:
            self.nft.apply(nft_plan.device_update(self._known(grant), grant))
            slot = self._slots[grant.mac]
        else:
            slot = nft_plan.free_slot(grant.mac, set(self._slots.values()))
            self.nft.apply(nft_plan.device_add(grant, slot))
            self._carried.pop(grant.mac, None)
        self._slots[grant.mac] = slot
        self._grants[grant.mac] = grant
        self.shares.joined(grant.mac, time.monotonic())
        self._tc_device(grant, slot)

    def _tc_device(self, grant: Grant, slot: int) -> None:
        if self.tc is None:
            return
        if self._tc_plan is None:
            self._reconcile_tc(self._state())
            return
        down, up = (tc_plan.device_class(grant, slot, d, self._fair(d)) for d in (True, False))
        self.tc.add_device(self._tc_plan, down, up)
        self._tc_applied[(self._tc_plan.lan, down.classid)] = down
        self._tc_applied[(self._tc_plan.wan, up.classid)] = up
        self._tc_stale = True  # re-rendered only when compared (keeps a login O(1))

    def _render_tc(self, state: DesiredState) -> tc_plan.TcPlan:
        sh = self.shares
        return tc_plan.render_tc(self.config, state, self._slots, sh.active, sh.staff_busy)

    def _fair(self, down: bool) -> int:
        community = tc_plan.community_kbit(self.config, down, self.shares.staff_busy)
        return tc_plan.fair_kbit(community, self.shares.active)

    def rebalance(self, now: float | None = None, limit: int | None = None) -> bool:
        """Re-set the guarantees (staff, community, devices) when the active devices or the
        staff's activity moved them (``Shares.want``); in the accounting pass, so a login
        stays O(1). Only classes whose rates changed are set (``changed_guarantees``), at
        most ``limit`` per call so the worker can run a login in between (``guarantees_due``
        while some are left; each call re-plans from the current devices, so a device that
        left in between is not re-created and one that joined got the new share at its
        login). True when guarantees were re-planned or set."""
        now = time.monotonic() if now is None else now
        if self.tc is None or self._tc_plan is None:
            return False
        staff = bool(nft_plan.staff_macs(self.config, self._state()))
        want = self.shares.want(now, staff)
        if want is not None:
            self.shares.active, self.shares.staff_busy = want
            self._guarantees_due = True
            log.info("guarantees re-planned: %d active device(s), staff busy: %s", *want)
        if not self._guarantees_due:
            return False
        plan = self._render_tc(self._state())
        self._tc_plan = plan
        self._tc_stale = False
        changes = tc_plan.changed_guarantees(self._tc_applied, plan)
        todo = changes if limit is None else changes[:limit]
        index = {dev: self.tc.index(dev) for dev in {dev for dev, _ in todo}}
        for dev, cls in todo:
            self.tc.set_class(index[dev], cls)
            self._tc_applied[(dev, cls.classid)] = cls
        if todo:
            log.info(
                "guarantees re-set: %d class(es), %d left", len(todo), len(changes) - len(todo)
            )
        self._guarantees_due = len(todo) < len(changes)
        return want is not None or bool(todo)

    @property
    def guarantees_due(self) -> bool:
        return self._guarantees_due

    def deauthorize(self, mac: str) -> None:
        """Cut one device off; a device that is already gone is success."""
        try:
            mac = normalise_mac(mac)
        except (ValueError, AttributeError) as e:
            raise ValueError(f"mac: {e}") from None
        old = self._grants.pop(mac, None)
        if old is not None and old.staff:
            if mac not in {d.mac for d in self.config.staff.devices}:
                self._set_staff(mac, False)
            return
        if old is not None and mac in self._slots:
            live: LiveDevice | None = self._known(old)  # our own record: no table listing
        else:
            live = self._live_device(mac)  # unknown to this process: ask the kernel
        if live is not None:
            self.nft.apply(nft_plan.device_remove(live))
        self._carried.pop(mac, None)
        slot = self._slots.pop(mac, None) or (live.slot if live else None)
        if slot is not None and self.tc is not None and self._tc_plan is not None:
            self.tc.remove_device(self._tc_plan, slot)
            for dev in (self._tc_plan.lan, self._tc_plan.wan):
                self._tc_applied.pop((dev, slot | tc_plan.ROOT), None)
            self._tc_stale = True

    def _set_staff(self, mac: str, on: bool) -> None:
        # nft classifies staff by MAC both ways (tc_plan's docstring): no tc change
        elem = {
            "element": {
                "family": nft_plan.FAMILY,
                "table": nft_plan.TABLE,
                "name": "staff",
                "elem": [mac],
            }
        }
        cmds: list[Any] = [{"add": elem}] + ([] if on else [{"delete": elem}])
        self.nft.apply(cmds)

    def set_blocked(self, macs: Iterable[str]) -> None:
        """Replace the set of blocked devices (dropped at the door, logged in or not)."""
        blocked = _macs(macs, "blocked_macs")
        self.nft.apply(nft_plan.set_replace("blocked", sorted(blocked)))
        self._blocked = blocked

    # --- reading ----------------------------------------------------------------------------
    def counters(self) -> dict[str, Counters]:
        """Counted bytes per authorised device (up and down separately) and quota state."""
        out: dict[str, Counters] = {}
        sent: dict[str, int] = {}
        listing = self.nft.list_table()
        for mac, dev in live_devices(listing).items():
            up, down = self._carried.get(mac, (0, 0))
            exhausted = dev.quota_bytes is not None and dev.quota_used >= dev.quota_bytes
            sent[mac] = dev.sent_packets
            out[mac] = Counters(
                mac=mac,
                up_bytes=up + dev.up_bytes,
                down_bytes=down + dev.down_bytes,
                quota_exhausted=exhausted,
                active=sent_since(self._sent.get(mac), dev.sent_packets),
            )
        self._sent = sent
        now = time.monotonic()
        self.shares.forget_except(out)
        self.shares.seen((m for m, c in out.items() if c.active), now)
        self.shares.staff_counter(rule_packets(listing, "from_lan", "staff"), now)
        return out

    def authorised_macs(self) -> set[str]:
        """MACs whose auth elements are live (kernel timeouts already applied)."""
        return {m for m, d in live_devices(self.nft.list_table()).items() if d.auth}

    # --- bridge ---------------------------------------------------------------------------
    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        full = ["ip", "netns", "exec", self.netns, *cmd] if self.netns else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, timeout=30)

    def isolate_lan_ports(self) -> list[str]:
        """Bridged LAN ports isolated from each other (L2 never crosses the inet hooks)."""
        if self.dry_run or not self.config.network.lan.client_isolation:
            return []
        lan = self.config.network.lan.interface
        p = self._run("ip", "-j", "link", "show", "master", lan)
        if p.returncode != 0 or not p.stdout.strip():
            return []  # not a bridge (a plain Wi-Fi interface: the AP isolates clients)
        ports = [link["ifname"] for link in json.loads(p.stdout)]
        for port in ports:
            r = self._run("bridge", "link", "set", "dev", port, "isolated", "on")
            if r.returncode != 0:
                log.warning("cannot isolate bridge port %s: %s", port, r.stderr.strip())
        return ports
