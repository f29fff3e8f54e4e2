"""`hub-agent run`: one asyncio process that owns the hub.

Start order matters for crash safety: open the database (WAL), rebuild the kernel from it
(``reconcile``: a kill -9 or a reboot restores every live session, and a device whose
kernel state had to be recreated has its counters re-based first so nothing is lost or
counted twice), then open the portal's socket, then account, sample and sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from hub_agent.accounts import Accounts
from hub_agent.api.protocol import HealthView
from hub_agent.api.server import start_server
from hub_agent.caretaker import CARETAKER, Desk
from hub_agent.config import HubConfig
from hub_agent.config_changes import ConfigChanges, RadiusStep, plan_changes
from hub_agent.configsync import ConfigSync
from hub_agent.content.service import ContentService
from hub_agent.content.state import CONTENT
from hub_agent.enforce.dnsmasq import DnsmasqRunner
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.fieldtools import traced, upstream_resolvers
from hub_agent.handler import AgentHandler
from hub_agent.lan_address import LanAddress
from hub_agent.lan_devices import LanDevices
from hub_agent.neighbours import NeighbourTable
from hub_agent.portal_follow import PortalFollow
from hub_agent.portal_view import write_portal_view
from hub_agent.purchases import Purchases
from hub_agent.sessions import loop as sessions_loop
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import Action, SessionService
from hub_agent.sessions.states import ENDED
from hub_agent.store import open_db, secure_data_dir
from hub_agent.telemetry import db_path
from hub_agent.telemetry.health import AgentStats
from hub_agent.telemetry.outbox import OUTBOX
from hub_agent.worker import PriorityWorker

log = logging.getLogger("hub_agent")

ACCOUNT_EVERY_S = 2.0
REBALANCE_CHUNK = 8  # classes re-set per worker job: a login waits for at most these
DISCOVER_EVERY_S = 10.0  # neighbours, sniffed DHCP/ARP and leases -> the dashboard's list
FULL_SAMPLE_EVERY = 5
T = TypeVar("T")


@dataclass
class Agent:
    config: HubConfig
    netns: str | None = None  # the lab drives a hub namespace from outside
    telemetry_enabled: bool = True
    account_every_s: float = ACCOUNT_EVERY_S
    clock: Callable[[], float] = time.time
    cutoffs_today: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    content: ContentService | None = None
    run_dnsmasq: bool = True
    sniff: bool = True  # scapy DHCP/ARP sniffer on the LAN (hostnames, real last-seen)
    trace: bool = False  # log every nft/tc change the appliers make (hub-agent run --trace)
    dnsmasq: DnsmasqRunner | None = None
    accounts: Accounts | None = None  # accounts through RADIUS, when configured
    _cache_stats: tuple[float, int, float | None] = (0.0, 0, None)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # One worker thread owns SQLite and the kernel handles (pyroute2's sync API cannot
        # run on the event loop's thread); everything that touches them is queued there.
        self.worker = PriorityWorker("hub-kernel")  # the portal's requests go first
        self.worker.submit(self._open).result()
        self.telemetry: Any = None
        self.handler = AgentHandler(
            self.sessions,
            self.enforcer,
            mac_for_ip=self.neighbours.mac_for_ip,
            health=self.health_view,
            uplink_up=self.uplink_up,
            on_event=self.emit,
            clock=self.clock,
            executor=self.worker,
            caretaker=self.caretaker,
        )
        self.portal_follow = self.handler.portal = PortalFollow()
        self._moved: tuple[int, tuple[str, ...]] = (self.config.version, ())  # listen fields

    def _open(self) -> None:
        # others enter, never list: the portal reads content/library.json, nginx's workers
        # content/files; the databases in it are 0600 (store.connect)
        secure_data_dir(self.config.data_dir, traversable=True)
        self.db = open_db(db_path(self.config.data_dir), SESSIONS, OUTBOX, CARETAKER)
        self.sessions = SessionService(self.config, self.db)
        self.enforcer = self._enforcer(self.config)
        self.neighbours = NeighbourTable(self.config.network.lan.interface, netns=self.netns)
        self.lan_devices = LanDevices(
            self.config, self.sessions, netns=self.netns, sniff=self.sniff, clock=self.clock
        )
        self.caretaker = Desk(
            self.db, lambda: self.config, self.uplink_up, self.lan_devices.hub_macs, self.clock
        )

    def kernel(self) -> Enforcer:
        return self.enforcer  # replaced by a config apply

    def _enforcer(self, config: HubConfig) -> Enforcer:
        enforcer = Enforcer(config, netns=self.netns)
        return traced(enforcer) if self.trace else enforcer

    async def on_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn)

    async def on_worker_urgent(self, fn: Callable[[], T]) -> T:
        """Ahead of queued periodic passes: the centre's grants, like the portal's requests."""
        return await asyncio.wrap_future(self.worker.submit_urgent(fn))

    # --- kernel ---------------------------------------------------------------------------
    def restore(self) -> None:
        """Make the kernel match the database (start, after kill -9, after reboot)."""
        lost = sessions_loop.start(self.sessions, self.enforcer, self.clock())
        log.info("kernel reconciled; %d device(s) re-created from stored usage", len(lost))

    def account_once(self) -> list[Action]:
        """One whole accounting pass in one go (the roaming link and RADIUS fold with it)."""
        actions = self._account_tick()
        self.enforcer.rebalance()
        self._account_after(actions)
        return actions

    def _account_tick(self) -> list[Action]:
        # counters, decisions and their kernel changes in one job: a login run between the
        # decision and its application could have its fresh session cut by a stale action
        return sessions_loop.tick(
            self.sessions, self.enforcer, now=self.clock(), on_event=self.emit
        )

    def _rebalance_some(self) -> bool:
        """Some of the guarantees a rebalance changed; True while more are left."""
        self.enforcer.rebalance(limit=REBALANCE_CHUNK)
        return self.enforcer.guarantees_due

    def _account_after(self, actions: list[Action]) -> None:
        self.caretaker.tick()  # the dashboard's hourly chart and "coupé depuis"
        if self.accounts is not None:
            self.accounts.sync()  # RADIUS Interim/Stop from what this pass counted and ended
        for a in actions:
            if a.reason in ("data_quota", "time_quota"):
                self.cutoffs_today += 1
                self.emit("quota_reached", mac=a.mac, reason=a.reason, action=a.kind)

    async def _account_pass(self) -> None:
        """The pass as several worker jobs, so an urgent job (a login, a grant) queued
        meanwhile waits for one step, not the whole pass."""
        actions = await self.on_worker(self._account_tick)
        while await self.on_worker(self._rebalance_some):
            pass
        await self.on_worker(lambda: self._account_after(actions))

    async def _account_loop(self) -> None:
        next_discovery = 0.0
        while not self._stop.is_set():
            try:
                await self._account_pass()
                if time.monotonic() >= next_discovery:
                    next_discovery = time.monotonic() + DISCOVER_EVERY_S
                    await self.on_worker(self.lan_devices.poll)
                await self._report_redemptions()
                self._refresh_cache_stats()
            except Exception:  # a bad pass must not stop enforcement of the next one
                log.exception("accounting pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.account_every_s)

    # --- DHCP and DNS for the LAN -----------------------------------------------------------
    def upstream_resolvers(self) -> list[str]:
        return upstream_resolvers(self.config)

    def start_dnsmasq(self) -> None:
        """(Re)start dnsmasq after the nft table exists (its nftset= fills our sets)."""
        if self.dnsmasq is not None:
            self.dnsmasq.stop()
        runner = DnsmasqRunner(self.config, self.upstream_resolvers())
        # A dnsmasq left by a killed agent still holds port 53: end it first.
        conf_flag = f"--conf-file={runner.conf_path}"
        for p in psutil.process_iter(["cmdline"]):
            if conf_flag in (p.info["cmdline"] or []):
                with contextlib.suppress(psutil.Error):
                    p.terminate()
                    p.wait(5)
        try:
            runner.start()
        except (RuntimeError, OSError) as e:  # the portal and enforcement go on regardless
            log.error("dnsmasq not started: %s", e)
            return
        self.dnsmasq = runner

    # --- configuration from the centre -----------------------------------------------------
    def apply_config(self, new: HubConfig) -> None:
        """Apply a new config as one step (called by ConfigSync, off the loop): the kernel,
        the LAN address, dnsmasq and the portal's copy on the worker, then RADIUS on the
        loop, as ``plan_changes`` says; the agent and the phones' sessions stay."""
        changes = plan_changes(
            self.config, new, upstream_resolvers(self.config), upstream_resolvers(new)
        )
        for name in changes.restart_needed:
            log.warning("config v%d: %s changed; applied at the next restart", new.version, name)
        self.portal_follow.forget(new.version)
        self.worker.submit(self._apply_config, new, changes).result()
        self._moved = (new.version, changes.portal_listen)
        if changes.radius is not None and self._loop is not None:
            step = self._follow_radius(changes.radius)
            asyncio.run_coroutine_threadsafe(step, self._loop).result()

    def _apply_config(self, new: HubConfig, changes: ConfigChanges) -> None:
        move = None if changes.lan_move is None else LanAddress(changes.lan_move, self.netns)
        if move is not None:
            move.add_new()  # before dnsmasq, nginx and the portal bind it
        if self.content is not None and self._loop is not None:
            content = self.content
            self._loop.call_soon_threadsafe(lambda: content.set_config(new))
        old_enforcer = self.enforcer
        self.config = new
        self.sessions.update_config(new)
        if move is not None:  # the phones' old addresses mean nothing now: by MAC until seen
            self.sessions.forget_addresses_outside(move.move.new.network)
        self.lan_devices.config = new  # (a renamed LAN interface needs an agent restart)
        self.enforcer = self._enforcer(new)
        self.handler.kernel = self.enforcer
        old_enforcer.close()
        self.restore()  # the captive redirect now points at the new portal port
        if self.run_dnsmasq and (changes.dnsmasq or self.dnsmasq is None):
            self.start_dnsmasq()
        self.publish_portal_view()  # the portal re-binds when its address or port moved
        if move is not None:
            move.remove_old()

    async def _follow_radius(self, step: RadiusStep) -> None:
        """RADIUS on or off, or new servers/port, without a restart (on the loop)."""
        if step == "stop" or self.config.radius is None:
            if self.accounts is not None:
                await self.accounts.stop()
            self.accounts = self.handler.accounts = None
        elif self.accounts is None:
            await self._start_accounts()
        else:
            await self.accounts.set_config(self.config, rebind=step == "rebind")

    async def _start_accounts(self) -> None:
        self.accounts = await self.on_worker(  # its journal's migrations, on the worker
            lambda: Accounts(self.config, self.db, self.sessions, self.kernel,
                             self.on_worker, self.account_once, self.emit, self.clock)
        )  # fmt: skip
        self.handler.accounts = self.accounts
        await self.accounts.start()

    def publish_portal_view(self) -> None:
        """Let the portal show what is enforced (plans, prices, names) without a restart."""
        try:
            write_portal_view(self.config)
        except OSError as e:
            log.error("portal's config copy not written: %s", e)

    def config_healthy(self) -> bool:
        """After an apply: the kernel must be exactly what the new config renders, and a
        portal asked to move its listeners must serve there (else: why, for the report)."""
        if not self.worker.submit(self.enforcer.kernel_equals_plan).result(30):
            return False
        version, fields = self._moved
        why = self.portal_follow.refusal(version) if fields else None
        if why is not None:
            raise RuntimeError(f"{', '.join(fields)}: the portal cannot serve there: {why}")
        return True

    # --- health and events ------------------------------------------------------------------
    def emit(self, type: str, /, **fields: Any) -> None:
        """Queue an event in the outbox; safe from the worker thread (the outbox and its
        wake-up belong to the loop's thread)."""
        if self.telemetry is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self.telemetry.events.emit(type, **fields)
        else:
            self._loop.call_soon_threadsafe(lambda: self.telemetry.events.emit(type, **fields))

    async def _report_redemptions(self) -> None:
        """Central vouchers redeemed here go to the centre, which detects a code used on
        two offline hubs. Written to the outbox first, marked reported after: a crash in
        between re-sends (the centre's reconcile is idempotent), never loses one."""
        secret = self.config.trust.voucher_secret
        if secret is None or self.telemetry is None:
            return  # no central vouchers without the deployment secret
        pending = await self.on_worker(self.sessions.pending_redemptions)
        for r in pending:  # the device goes as a keyed pseudonym, never its MAC
            fields = r.as_event(secret.get_secret_value().encode())
            self.telemetry.events.emit(str(fields.pop("type")), **fields)
        if pending:
            await self.on_worker(lambda: self.sessions.mark_reported(pending))

    def _refresh_cache_stats(self) -> None:
        """Cache figures for the dashboard, read on the loop's thread (the content DB's)."""
        if self.content is None:
            return
        rep = self.content.report()
        ready = sum(1 for i in rep["items"] if i["state"] == "ready")
        self._cache_stats = (rep["used_bytes"] / (1024 * 1024), ready, rep["hit_ratio_today"])

    def uplink_up(self) -> bool:
        probe = getattr(self.telemetry, "last_probe", None)
        return True if probe is None else bool(probe.latency_ms is not None)

    def agent_stats(self) -> AgentStats:
        # Called from the telemetry loop: read through the worker thread.
        views = self.worker.submit(self.sessions.device_views, self.clock()).result(10)
        live = [v for v in views if v.session is not None and v.session.state != ENDED]
        used_mb, _, hit_ratio = self._cache_stats
        return AgentStats(
            devices_connected=len(views),
            devices_authorised=len(live),
            bytes_served_today=sum(v.session.bytes_used for v in live if v.session),
            quota_cutoffs_today=self.cutoffs_today,
            cache_used_mb=round(used_mb, 1),
            cache_hit_ratio=hit_ratio,
        )

    def health_view(self) -> HealthView:
        temps: list[float] = []
        with contextlib.suppress(AttributeError, OSError):
            for entries in psutil.sensors_temperatures().values():
                temps.extend(e.current for e in entries if e.current)
        probe = getattr(self.telemetry, "last_probe", None)
        disk = self.config.data_dir if self.config.data_dir.exists() else Path("/")
        return HealthView(
            cpu_pct=psutil.cpu_percent(interval=None),
            mem_pct=psutil.virtual_memory().percent,
            disk_pct=psutil.disk_usage(str(disk)).percent,
            temperature_c=max(temps) if temps else None,
            uplink_up=self.uplink_up(),
            uplink_latency_ms=getattr(probe, "latency_ms", None),
            broker_connected=bool(
                self.telemetry is not None and self.telemetry.link.connected.is_set()
            ),
            config_version=self.config.version,
            cache_used_mb=round(self._cache_stats[0], 1),
            cache_items=self._cache_stats[1],
        )

    # --- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.on_worker(self.restore)
        await self.on_worker(self.publish_portal_view)
        if self.run_dnsmasq:
            await self.on_worker(self.start_dnsmasq)
        if self.sniff:
            await self.on_worker(self.lan_devices.start)
        shop = await self.on_worker(  # its migrations, on the thread that owns the database
            lambda: Purchases(self.db, lambda: self.config, self.sessions, self.kernel, self.emit)
        )
        self.handler.purchases = shop  # mobile money: offered while the broker link is up
        if self.config.radius is not None:
            await self._start_accounts()
        server = await start_server(self.config.portal.agent_socket, self.handler)
        paylink = roaming = None
        if self.telemetry_enabled:
            from hub_agent.telemetry.service import Telemetry

            # Slow-moving fields on every 5th sample only: 9.8 instead of 15.2 MB/month at
            # 60 s (bench/bench_telemetry_bytes.py); the controller merges light samples.
            self.telemetry = Telemetry(
                self.config, agent_stats=self.agent_stats, full_every=FULL_SAMPLE_EVERY
            )
            self.configsync = ConfigSync(
                self.config,
                apply=self.apply_config,
                health_check=self.config_healthy,
                telemetry=self.telemetry,
            )
            from hub_agent.purchase_link import PurchaseLink

            paylink = PurchaseLink(shop, self.telemetry, self.on_worker_urgent, self.clock)
            from hub_agent.roaming_link import RoamingLink  # central codes' balances

            roaming = RoamingLink(lambda: self.config, self.telemetry, self.sessions,
                                  self.kernel, self.on_worker_urgent, self.clock,
                                  fold=self.account_once)  # fmt: skip
            self.handler.roaming = roaming
            await self.telemetry.start()
        # The content cache keeps its own connection on the loop's thread (its sync and its
        # usage collection share it and must not interleave).
        self.content = ContentService(
            self.config, open_db(db_path(self.config.data_dir), CONTENT), on_event=self.emit
        )
        tasks = [
            asyncio.create_task(self._account_loop()),
            asyncio.create_task(self.content.run(self._stop)),
        ]
        if paylink is not None:
            tasks.append(asyncio.create_task(paylink.run(self._stop)))
        if roaming is not None:
            tasks.append(asyncio.create_task(roaming.run(self._stop)))
        log.info("hub %s running", self.config.hub.id)
        try:
            await self._stop.wait()
        finally:
            server.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.accounts is not None:
                await self.accounts.stop()
            if self.telemetry is not None:
                await self.telemetry.stop()
            await self.on_worker(self.neighbours.close)
            await self.on_worker(self.lan_devices.stop)
            await self.on_worker(self.enforcer.close)
            if self.dnsmasq is not None:
                # Stopping DHCP/DNS with the agent is deliberate: a restart starts it again.
                await self.on_worker(self.dnsmasq.stop)
            self.worker.shutdown(wait=True)
            # Kernel state stays: devices keep their access while the agent restarts.


def run_agent(config: HubConfig, netns: str | None = None, trace: bool = False) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        agent = Agent(config, netns=netns, trace=trace)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())
    return 0
