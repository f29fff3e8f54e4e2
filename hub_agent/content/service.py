"""The content cache as one agent service: sync loop + nginx + kiwix-serve + usage.

The daemon wires it as::

    svc = ContentService(config, db, on_event=telemetry_event)
    await svc.run(stop)            # until stop is set
    svc.set_config(new_config)     # when a new signed config is applied
    svc.report()                   # per-item state for the centre (health / events)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from hub_agent.config import HubConfig
from hub_agent.content.kiwix import KiwixServer
from hub_agent.content.nginx import NginxError, NginxPlan, NginxServer, ingest
from hub_agent.content.sync import EV_FAILED, ContentSync, EventHook, SyncOptions, _no_event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    listen: tuple[str, ...] = ()  # default: the LAN address(es) on content.serve_port
    user: str | None = "www-data"  # nginx workers' user when the agent runs as root
    usage_every_s: float = 10.0


def listen_addresses(config: HubConfig) -> tuple[str, ...]:
    port = config.content.serve_port
    lan = config.network.lan
    out = [f"{lan.address.ip}:{port}"]
    if lan.address6 is not None:
        out.append(f"[{lan.address6.ip}]:{port}")
    return tuple(out)


class ContentService:
    def __init__(
        self,
        config: HubConfig,
        db: sqlite_utils.Database,
        on_event: EventHook = _no_event,
        sync_options: SyncOptions | None = None,
        serve_options: ServeOptions | None = None,
    ) -> None:
        self.sync = ContentSync(config, db, on_event, sync_options or SyncOptions())
        self.serve_options = serve_options or ServeOptions()
        self.on_event = on_event
        lib = self.sync.library
        self.kiwix = KiwixServer(config.content.serve_port + 1, lib.run_dir / "kiwix.log")
        self.nginx = NginxServer(self._nginx_plan(config))
        self._kiwix_warned = False
        self._nginx_warned = False

    def _nginx_plan(self, config: HubConfig) -> NginxPlan:
        lib = self.sync.library
        lan, port = config.network.lan, config.portal.http_port
        return NginxPlan(
            content_root=lib.root,
            run_dir=lib.run_dir,
            listen=self.serve_options.listen or listen_addresses(config),
            portal_url=f"http://{lan.address.ip}:{port}/content/",
            portal_url6=None
            if lan.address6 is None
            else f"http://[{lan.address6.ip}]:{port}/content/",
            kiwix_port=self.kiwix.port if KiwixServer.available() else None,
            user=self.serve_options.user if os.geteuid() == 0 else None,
        )

    def set_config(self, config: HubConfig) -> None:
        self.sync.set_config(config)
        self.nginx.plan = self._nginx_plan(config)
        if self.nginx.write():
            self.nginx.reload()

    def report(self) -> dict[str, Any]:
        return self.sync.report()

    def health_stats(self) -> tuple[float, float | None]:
        """(cache in use in MiB, hit ratio today) for telemetry's AgentStats (cache, hit)."""
        rep = self.sync.report()
        return rep["used_bytes"] / (1024 * 1024), rep["hit_ratio_today"]

    async def collect_usage(self) -> None:
        """Hits from nginx's log. On the loop's thread: the database connection is shared
        with the sync loop, and one transaction must never interleave with another."""
        day = self.sync.local_now().date().isoformat()
        ingest(self.nginx.access_log, self.sync.state, day)
        old = self.nginx.rotate()
        if old is not None:
            await asyncio.sleep(0.2)  # workers switch to the new file
            ingest(old, self.sync.state, day)
            old.unlink(missing_ok=True)

    def _start_nginx(self) -> None:
        try:
            self.nginx.start()
        except (NginxError, OSError) as e:
            if not self._nginx_warned:  # said once; retried at every usage round
                self._nginx_warned = True
                log.error("content: static server not started: %s", e)
                self.on_event(EV_FAILED, item=None, reason=f"static server: {e}")

    def refresh_kiwix(self) -> None:
        ready = {r["id"] for r in self.sync.state.rows() if r["state"] == "ready"}
        zims = [
            self.sync.library.file_path(i)
            for i in self.sync.manifest
            if i.kind == "zim" and i.id in ready
        ]
        if zims and not KiwixServer.available():
            if not self._kiwix_warned:
                self._kiwix_warned = True
                self.on_event(
                    EV_FAILED,
                    item=None,
                    reason="kiwix-serve is not installed: ZIMs can be downloaded, not browsed",
                )
            return
        self.kiwix.ensure(zims)

    async def run(self, stop: asyncio.Event) -> None:
        self._start_nginx()
        sync_task = asyncio.create_task(self.sync.run(stop))
        try:
            while not stop.is_set():
                try:
                    self.refresh_kiwix()
                    if not self.nginx.running():
                        self._start_nginx()
                    await self.collect_usage()
                except Exception:  # serving trouble must not stop the sync, nor the agent
                    log.exception("content: serving round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.serve_options.usage_every_s)
        finally:
            self.sync.stop()
            await sync_task
            with contextlib.suppress(Exception):
                await self.collect_usage()
            self.kiwix.stop()
            self.nginx.stop()
