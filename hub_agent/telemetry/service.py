"""``Telemetry``: the daemon's telemetry as asyncio tasks with a clear start and stop.

Tasks: *sample* (a health sample every ``telemetry_interval_s`` into the outbox), *probe*
(uplink latency/loss, raising ``uplink_lost``/``uplink_back``), *drain* (outbox -> broker,
oldest first, at most ``drain_rate_per_s``, deleting rows on PUBACK in batches), *status*
(a small JSON file ``hub-agent status`` reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import sqlite_utils

from hub_agent.config import HubConfig
from hub_agent.mqtt.core import LinkStopped, PublishFailed
from hub_agent.mqtt.link import LinkSettings, MqttLink
from hub_agent.store import open_db
from hub_agent.telemetry import db_path, telemetry_dir, topics
from hub_agent.telemetry.events import Events, UplinkState, disk_step, uplink_step
from hub_agent.telemetry.files import Counter, write_json
from hub_agent.telemetry.health import AgentStats, ProbeResult, compact_sample, system_stats
from hub_agent.telemetry.outbox import OUTBOX, Outbox, Queued, TokenBucket

log = logging.getLogger(__name__)

WINDOW = 1000  # outbox rows handed to paho and not yet acknowledged
ACK_FLUSH_S = 0.05  # acknowledged rows are deleted in one transaction this often
STATUS_EVERY_S = 2.0
PROBE_WINDOW = 10  # probes over which loss is computed
FLUSH_SAMPLES = 5  # health samples sent together
FLUSH_MAX_S = 300.0
COALESCE_MAX = 64  # a backlog this long drains at once, uncorked
# What of a config makes a different broker connection (keepalive follows the interval).
BROKER_FIELDS = (
    "host",
    "port",
    "tls",
    "ca_file",
    "username",
    "password",
    "fallback_username",
    "fallback_password",
    "keepalive_s",
)


def status_path(data_dir: Path) -> Path:
    return telemetry_dir(data_dir) / "status.json"


_UNSET: Any = object()


class Telemetry:
    def __init__(
        self,
        config: HubConfig,
        *,
        db: sqlite_utils.Database | None = None,
        agent_stats: Callable[[], AgentStats] | None = None,
        link_settings: LinkSettings | None = None,
        interval_s: float | None = None,
        drain_rate_per_s: float | None = _UNSET,
        probe: Callable[[str], Any] | None = _UNSET,
        probe_every_s: float | None = None,
        flush_every_s: float | None = None,
        full_every: int = 1,
    ) -> None:
        """``drain_rate_per_s=None`` removes the rate bound (benchmarks); ``probe=None``
        disables the uplink probe. Defaults come from ``config``."""
        self.config = config
        self.hub_id = config.hub.id
        self.data_dir = config.data_dir
        self.interval_s = interval_s or float(config.mqtt.telemetry_interval_s)
        self.db = db if db is not None else open_db(db_path(config.data_dir), OUTBOX)
        self.outbox = Outbox(self.db, self.hub_id, config.mqtt.outbox_budget_mb * 1024 * 1024)
        self._wake = asyncio.Event()
        self.events = Events(self.outbox, on_put=self._wake.set, key=self._pseudonym_key)
        self.agent_stats = agent_stats
        self.config_version: Callable[[], int | None] = lambda: config.version
        self.session_counter = Counter(telemetry_dir(config.data_dir) / "session")
        self.link = MqttLink(
            link_settings or LinkSettings.from_config(config),
            next_session=self.session_counter.next,
            config_version=lambda: self.config_version(),
        )
        rate = config.mqtt.drain_rate_per_s if drain_rate_per_s is _UNSET else drain_rate_per_s
        self.bucket = TokenBucket(rate)
        if probe is _UNSET:
            from hub_agent.telemetry.health import ping_probe

            probe = ping_probe
        self._probe = probe
        self.probe_every_s = probe_every_s or max(self.interval_s, 5.0)
        # Health goes out in groups of ~FLUSH_SAMPLES (5 min at the default 60 s);
        # 0 sends each sample at once.
        self._flush_fixed = flush_every_s
        self.flush_every_s = self._flush_for(self.interval_s)
        self.last_probe: ProbeResult | None = None
        # 1: every sample carries every field (the default). N > 1: the slow fields ride on
        # every N-th sample only, cutting uplink bytes by ~40% (bench_telemetry_bytes);
        # the centre must then keep the last value of each field.
        self.full_every = max(1, full_every)
        self._samples = 0
        self._probe_window: deque[bool] = deque(maxlen=PROBE_WINDOW)
        self._uplink = UplinkState()
        self._disk_full = False
        self._cursor = 0
        self._inflight: dict[int, asyncio.Future[None]] = {}
        self._acked: list[int] = []
        self._acked_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._producers: list[asyncio.Task[None]] = []
        self.published = 0
        self.refused = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()
        self.events.emit("agent_start", version=self._agent_version(), pid=os.getpid())
        producers = [self._sample_loop()]
        if self._probe is not None:
            producers.append(self._probe_loop())
        self._producers = [asyncio.create_task(j) for j in producers]
        self._drain_task = asyncio.create_task(self._drain_loop())
        workers = [self._ack_loop(), self._status_loop()]
        self._tasks = [self._drain_task, *(asyncio.create_task(j) for j in workers)]

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Stop sampling, emit ``agent_stop``, give the drain a moment to send what is
        queued, then close the link. Whatever is not acknowledged stays in the outbox."""
        if not self._tasks:
            return
        for t in self._producers:  # the sampler and the probe
            t.cancel()
        await asyncio.gather(*self._producers, return_exceptions=True)
        self._producers = []
        with contextlib.suppress(Exception):
            self.events.emit("agent_stop")
        self.flush_every_s = 0.0  # no holding back now
        self._wake.set()
        deadline = time.monotonic() + flush_timeout_s
        while self.link.connected.is_set() and time.monotonic() < deadline:
            if not self._inflight and not self.outbox.after(self._cursor, 1):
                break
            await asyncio.sleep(0.02)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.link.stop()
        self._flush_acks()
        self._write_status()

    def _pseudonym_key(self) -> bytes | None:
        """Devices in events go as a hash keyed by the deployment's voucher secret."""
        secret = self.config.trust.voucher_secret
        return None if secret is None else secret.get_secret_value().encode()

    def _flush_for(self, interval_s: float) -> float:
        if self._flush_fixed is not None:
            return self._flush_fixed
        return min(FLUSH_MAX_S, interval_s * (FLUSH_SAMPLES - 0.5))

    def reconfigure(self, cfg: HubConfig) -> None:
        """Take a newly applied config's telemetry settings (interval, budget, drain rate,
        probe target); ``switch_broker`` takes its broker address and credentials."""
        self.config = cfg
        self.interval_s = float(cfg.mqtt.telemetry_interval_s)
        self.flush_every_s = self._flush_for(self.interval_s)
        self.outbox.budget_bytes = cfg.mqtt.outbox_budget_mb * 1024 * 1024
        if self.bucket.rate is not None:
            self.bucket.rate = cfg.mqtt.drain_rate_per_s

    # -- moving to another broker ----------------------------------------------------------

    def broker_settings(self, cfg: HubConfig) -> LinkSettings:
        """The link ``cfg`` asks for (this link's other settings, e.g. backoff, kept)."""
        want = LinkSettings.from_config(cfg)
        return replace(self.link.settings, **{f: getattr(want, f) for f in BROKER_FIELDS})

    async def switch_broker(self, cfg: HubConfig, timeout_s: float = 30.0) -> str | None:
        """Take a config's broker address and credentials. Returns None when nothing
        changes or the new broker accepted us; otherwise the reason, with the previous link
        back in place. Nothing queued is lost either way: what the old link had not got
        acknowledged is sent again over the new one (repeats are removable by seq)."""
        target = self.broker_settings(cfg)
        previous = self.link.settings
        if target == previous:
            return None
        await self._swap_link(target)
        reason = await self._accepted_within(timeout_s)
        if reason is None:
            log.info("MQTT moved to %s:%d", target.host, target.port)
            return None
        log.warning("MQTT %s:%d: %s; back to the previous broker", target.host, target.port, reason)
        await self._swap_link(previous)
        return f"broker {target.host}:{target.port}: {reason}"

    async def _accepted_within(self, timeout_s: float) -> str | None:
        link = self.link
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if link.connected.is_set():
                return None
            if link.status.failures >= 2:  # refused or unreachable twice: not a blip
                return link.status.last_error or "connection failed"
            await asyncio.sleep(0.05)
        return link.status.last_error or f"no CONNACK within {timeout_s:g} s"

    async def _swap_link(self, settings: LinkSettings) -> None:
        drain = self._drain_task
        if drain is not None:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        await self.link.stop()
        self._flush_acks()
        self._inflight.clear()
        self._cursor = 0  # rows still queued go again, oldest first, over the new link
        self.link = self.link.moved_to(settings)
        await self.link.start()
        if drain is not None:
            self._drain_task = asyncio.create_task(self._drain_loop())
            self._tasks = [self._drain_task if t is drain else t for t in self._tasks]

    async def __aenter__(self) -> Telemetry:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @staticmethod
    def _agent_version() -> str:
        from hub_agent import __version__

        return __version__

    # -- sampling ------------------------------------------------------------------------

    async def sample_once(self) -> int:
        """Gather one health sample, queue it; return its seq."""
        ts = time.time()
        net = self.config.network
        system = await asyncio.to_thread(
            system_stats, self.data_dir, [net.wan.interface, net.lan.interface]
        )
        agent = self.agent_stats() if self.agent_stats is not None else None
        full = self._samples % self.full_every == 0
        self._samples += 1
        fields = compact_sample(system, self.last_probe, agent, self.config_version(), full)
        if self.outbox.thinned:
            fields["thin"] = self.outbox.thinned
        seq = self.outbox.put("health", fields, ts=ts)
        self._wake.set()
        self._disk_full, ev = disk_step(self._disk_full, system.disk_pct)
        if ev is not None:
            self.events.emit(ev, used_pct=round(system.disk_pct), free_mb=int(system.disk_free_mb))
        return seq

    async def _sample_loop(self) -> None:
        next_t = time.monotonic()
        while True:
            try:
                await self.sample_once()
            except Exception:
                log.exception("health sample failed")
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (slow disk, suspended box): do not burst to catch up
                next_t, delay = time.monotonic(), 0.0
            await asyncio.sleep(delay)

    async def _probe_loop(self) -> None:
        assert self._probe is not None
        ticks = 0
        while True:
            # While the broker link is up the uplink evidently works: one echo per full
            # sample (every full_every-th interval) measures latency and loss. While it is
            # down, probe every interval, to tell "uplink lost" from "broker down" quickly.
            due = ticks % self.full_every == 0 or not self.link.connected.is_set()
            ticks += 1
            if not due:
                await asyncio.sleep(self.probe_every_s)
                continue
            host = self.config.network.wan.probe_host
            try:
                result: ProbeResult = await self._probe(host)
            except Exception:
                log.exception("uplink probe failed")
                result = ProbeResult(None, 100.0)
            # One echo per probe keeps the probe's own uplink cost small (0.38 MB/month at
            # one a 5 minutes); loss is reported over the last PROBE_WINDOW probes.
            self._probe_window.append(result.ok)
            lost = self._probe_window.count(False)
            self.last_probe = ProbeResult(result.latency_ms, 100.0 * lost / len(self._probe_window))
            self._uplink, ev = uplink_step(self._uplink, result.ok)
            if ev is not None:
                self.events.emit(ev, target=host)
            await asyncio.sleep(self.probe_every_s)

    # -- drain ---------------------------------------------------------------------------

    async def _drain_loop(self) -> None:
        while True:
            await self.link.connected.wait()
            self._wake.clear()  # before the query: a put after it wakes us again
            room = WINDOW - len(self._inflight)
            rows = self.outbox.after(self._cursor, min(room, 256)) if room > 0 else []
            if not rows:
                await self._wake.wait()
                continue
            hold = self._hold_for(rows)
            if hold > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), hold)
                continue
            corked = 1 < len(rows) <= COALESCE_MAX
            if corked:
                self.link.cork(True)
            for row in rows:
                wait = self.bucket.delay(time.monotonic())
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self.link.connected.is_set():
                    break  # the cursor stays before this row; it goes after the reconnect
                fut = self.link.publish(topics.for_kind(self.hub_id, row.kind), row.payload)
                self._cursor = row.id
                self._inflight[row.id] = fut
                fut.add_done_callback(partial(self._on_ack, row.id))
            if corked:
                # paho's network thread writes within a few ms of being woken.
                asyncio.get_running_loop().call_later(0.05, self.link.cork, False)

    def _hold_for(self, rows: list[Queued]) -> float:
        """Seconds to hold a few fresh health samples so they go out together (events and
        backlogs go at once). Fewer, fuller TCP segments: less uplink and radio time."""
        if self.flush_every_s <= 0 or len(rows) >= COALESCE_MAX:
            return 0.0
        if any(r.kind != "health" for r in rows):
            return 0.0
        return max(0.0, rows[0].ts + self.flush_every_s - time.time())

    def _on_ack(self, row_id: int, fut: asyncio.Future[None]) -> None:
        if self._inflight.get(row_id) is fut:  # not a stale ack of a link since replaced
            del self._inflight[row_id]
        self._wake.set()
        if fut.cancelled():
            return
        err = fut.exception()
        self._acked_event.set()
        if err is None:
            self.published += 1
            self._acked.append(row_id)
        elif isinstance(err, PublishFailed):
            # The broker answered and refused (e.g. not authorised): resending cannot help.
            self.refused += 1
            self._acked.append(row_id)
            log.warning("outbox row %d refused by the broker: %s", row_id, err)
        elif isinstance(err, LinkStopped):
            pass  # still in the outbox; published again after the restart

    def _flush_acks(self) -> None:
        if self._acked:
            ids, self._acked = self._acked, []
            self.outbox.ack(ids)

    async def _ack_loop(self) -> None:
        # Sleeps while idle; after the first ack, waits a moment so deletes batch up.
        while True:
            await self._acked_event.wait()
            await asyncio.sleep(ACK_FLUSH_S)
            self._acked_event.clear()
            self._flush_acks()

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.link.status
        return {
            "pid": os.getpid(),
            "updated": round(time.time(), 3),
            "interval_s": self.interval_s,
            "broker": f"{self.link.settings.host}:{self.link.settings.port}",
            "connected": st.connected,
            "connected_since": st.connected_since,
            "session": st.session,
            "last_error": st.last_error,
            "mqtt": {"user": st.user, "credential": st.credential},
            "outbox": self.outbox.depth(),
            "oldest_queued_ts": self.outbox.oldest_ts("health"),
            "in_flight": len(self._inflight),
            "thinned": self.outbox.thinned,
            "last_seq": {"health": self.outbox.last_seq("health")},
            "uplink_up": self._uplink.up,
            "last_probe": None
            if self.last_probe is None
            else {"lat": self.last_probe.latency_ms, "loss": self.last_probe.loss_pct},
        }

    def _write_status(self) -> None:
        try:
            write_json(status_path(self.data_dir), self.status(), mode=0o644, durable=False)
        except OSError as e:
            log.warning("cannot write the status file: %s", e)

    async def _status_loop(self) -> None:
        while True:
            self._write_status()
            await asyncio.sleep(STATUS_EVERY_S)
