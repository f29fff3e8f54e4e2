"""The sync loop: line the library up with the manifest, off-peak, under the cap.

Each ``step`` does at most one unit of work (one download attempt or one import) and
writes the outcome before the next; a crash at any point leaves a state ``step`` resumes
from. Decisions come from ``plan`` (pure); this module only carries them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx
import sqlite_utils

from hub_agent.config import ContentItem, HubConfig
from hub_agent.content import bundle, importer, plan
from hub_agent.content.bucket import bucket_for_kbit
from hub_agent.content.fetch import FetchError, Paused, Progress, fetch, range_chunk_for
from hub_agent.content.library import Library, sha256_file
from hub_agent.content.state import ContentState
from hub_agent.content.window import in_window, seconds_until_open

log = logging.getLogger(__name__)

MB = 1_000_000  # budget_mb is in decimal megabytes, like the sizes operators read

# Event types, named as hub_agent.telemetry.events knows them.
EV_DONE = "cache_sync_done"  # an item is ready (item, size, source: uplink|import)
EV_FAILED = "cache_sync_failed"  # a try failed (reason, retry_in_s) or was refused (refused)
EV_EVICTED = "cache_item_evicted"  # pushed out to make room (item, for_item)
EV_REMOVED = "cache_item_removed"  # no longer assigned, or expired (item, reason)


class EventHook(Protocol):
    """``on_event("cache_sync_done", item="x", ...)``: the telemetry outbox publishes these."""

    def __call__(self, type: str, /, **fields: Any) -> None: ...


@dataclass(frozen=True)
class SyncOptions:
    retry_base_s: float = 60.0  # first retry after a failure; doubles each time
    idle_poll_s: float = 60.0  # longest sleep between steps (config changes, new imports)
    import_every_s: float = 300.0  # how often the USB folder is rescanned
    connect_timeout_s: float = 15.0
    read_timeout_s: float = 30.0  # a stalled uplink is given up after this
    range_chunk: int | None = None  # bytes per request; None: ~2 s at the cap


def _no_event(type: str, /, **fields: Any) -> None:
    log.info("content event %s %s", type, fields)


class ContentSync:
    def __init__(
        self,
        config: HubConfig,
        db: sqlite_utils.Database,
        on_event: EventHook = _no_event,
        options: SyncOptions = SyncOptions(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = ContentState(db)
        self.on_event = on_event
        self.options = options
        self.clock = clock
        self._client: httpx.AsyncClient | None = None
        self._stale: list[httpx.AsyncClient] = []
        self._stopping = False
        self._last_import = float("-inf")
        self._hash_cache: dict[tuple[str, int, int], str] = {}
        self.set_config(config)

    # --- configuration ------------------------------------------------------------
    def set_config(self, config: HubConfig) -> None:
        """A new config (manifest, window, cap, budget) applies from the next step."""
        self.config = config
        self.settings = config.content
        self.library = Library.under(config.data_dir)
        self.library.ensure()
        self.tz = ZoneInfo(config.hub.timezone)
        self.bucket = bucket_for_kbit(self.settings.bandwidth_kbit)
        if self._client is not None:  # the receive buffer follows the cap: a new client
            self._stale.append(self._client)  # closed on the loop, at the next download
            self._client = None

    @property
    def budget(self) -> int:
        return self.settings.budget_mb * MB

    @property
    def range_chunk(self) -> int:
        rate = self.settings.bandwidth_kbit * 1000 / 8
        return self.options.range_chunk or range_chunk_for(rate)

    @property
    def manifest(self) -> list[ContentItem]:
        return list(self.settings.items)

    def item(self, item_id: str) -> ContentItem | None:
        return next((i for i in self.settings.items if i.id == item_id), None)

    def local_now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), self.tz)

    def in_window(self) -> bool:
        return in_window(self.settings.sync_window, self.local_now())

    def _emit(self, type: str, **fields: Any) -> None:
        try:
            self.on_event(type, **fields)
        except Exception:  # a telemetry hiccup must not stop the library
            log.exception("content event hook failed for %s", type)

    # --- the loop -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        async def watch() -> None:  # a download in progress stops at its next chunk
            await stop.wait()
            self._stopping = True

        watcher = asyncio.create_task(watch())
        self._stopping = False
        try:
            while not stop.is_set():
                try:
                    if await self.step():
                        continue
                    delay = self.idle_delay()
                except Exception:  # a bug or a sick disk must not end the library for good
                    log.exception("content sync step failed; retrying later")
                    delay = self.options.idle_poll_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            self._stopping = True
            watcher.cancel()
            await self.aclose()

    def stop(self) -> None:
        """Ask a running download to stop at its next chunk (its bytes are kept)."""
        self._stopping = True

    async def aclose(self) -> None:
        while self._stale:
            await self._stale.pop().aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def idle_delay(self) -> float:
        """How long to sleep when there is nothing to do right now."""
        now = self.clock()
        delay = self.options.idle_poll_s
        if not self.in_window():
            opens = seconds_until_open(self.settings.sync_window, self.local_now())
            return max(0.05, min(delay, opens))
        held = self.state.held()
        for h in held.values():
            if h.state == "failed" and h.next_attempt > now:
                delay = min(delay, h.next_attempt - now)
        return max(0.05, delay)

    async def step(self) -> bool:
        """One unit of work; True when something was done (call again at once)."""
        self.reconcile()
        if await self._maybe_import():
            return True
        if not self.in_window():
            return False
        held = self.state.held()
        item = plan.next_to_fetch(self.manifest, held, self.budget, self.clock())
        if item is None:
            return False
        if not self._make_room(item, held):
            return True
        await self._download(item)
        return True

    # --- manifest -----------------------------------------------------------------
    def reconcile(self) -> None:
        held = self.state.held()
        today = self.local_now().date()
        r = plan.reconcile(self.manifest, held, today)
        changed = False
        for item_id, reason in r.drop:
            self.library.remove(item_id)
            self.state.delete(item_id)
            self._emit(EV_REMOVED, item=item_id, reason=reason)
            changed = True
        for item_id in (*r.add, *r.reset):
            item = self.item(item_id)
            assert item is not None
            if item_id in r.reset:
                self.library.remove(item_id)
                changed = True
            self.state.add(item_id, item.size, item.sha256, item.priority == "pinned")
        for item in self.manifest:  # priority may change without the bytes changing
            h = held.get(item.id)
            if h is not None and h.pinned != (item.priority == "pinned"):
                self.state.set_pinned(item.id, item.priority == "pinned")
        changed = self._check_files() or changed
        self._refuse_oversize()
        if changed or not self.library.index_path.exists():
            self.write_index()

    def _check_files(self) -> bool:
        """The disk is the truth: adopt a published file whose state write was lost (a kill
        between rename and commit), requeue a ready item whose file vanished."""
        changed = False
        for item in self.manifest:
            row = self.state.row(item.id)
            if row is None:
                continue
            path = self.library.file_path(item)
            if row["state"] == "ready" and not path.is_file() and self._renamed(item, path):
                changed = True  # same bytes, new source URL (hence file name): kept
            elif row["state"] == "ready" and not path.is_file():
                log.warning("content %s: file missing on disk; queued again", item.id)
                self.state.update(item.id, state="queued", bytes_done=0, reason="file missing")
                changed = True
            elif row["state"] in ("queued", "downloading", "failed") and path.is_file():
                # rare (crash recovery only), so hashing inline is acceptable here
                if path.stat().st_size == item.size and sha256_file(path) == item.sha256:
                    self.library.part_path(item.id).unlink(missing_ok=True)
                    if item.kind == "html" and zipfile.is_zipfile(path):
                        self._unpack(item, path)
                    self._mark_ready(item, source=row["source"] or "uplink")
                else:
                    self.library.remove(item.id)
                changed = True
        return changed

    def _renamed(self, item: ContentItem, path: Path) -> bool:
        """A ready item whose URL changed keeps its file under the new name (no refetch)."""
        folder = path.parent
        if not folder.is_dir():
            return False
        for f in folder.iterdir():
            candidate = f.is_file() and f.name != "site.entry" and f.stat().st_size == item.size
            # rare (a source moved), so a one-off hash is affordable
            if candidate and sha256_file(f) == item.sha256:
                os.replace(f, path)
                return True
        return False

    def _refuse_oversize(self) -> None:
        for item in self.manifest:
            row = self.state.row(item.id)
            if row is None or item.size <= self.budget:
                continue
            reason = f"oversize: {item.size} bytes > budget {self.budget} bytes"
            if row["reason"] != reason:
                self.state.update(item.id, state="failed", reason=reason, bytes_done=0)
                self.library.remove(item.id)
                self._emit(
                    EV_FAILED,
                    item=item.id,
                    refused="oversize",
                    reason="larger than the disk budget",
                    size=item.size,
                    budget=self.budget,
                )

    def write_index(self) -> None:
        ready = {r["id"] for r in self.state.rows() if r["state"] == "ready"}
        self.library.write_index(i for i in self.manifest if i.id in ready)

    # --- budget -------------------------------------------------------------------
    def _make_room(self, item: ContentItem, held: dict[str, plan.Held]) -> bool:
        room = plan.plan_room(item, held, self.budget)
        if room.refused == "oversize":
            self._refuse_oversize()
            return False
        if room.refused == "no_room":
            reason = f"no room: {room.detail}"
            h = held[item.id]
            self.state.update(
                item.id,
                state="failed",
                reason=reason,
                next_attempt=self.clock() + plan.backoff_s(1, self.options.retry_base_s),
            )
            if h.reason != reason:
                self._emit(
                    EV_FAILED, item=item.id, refused="no_room", reason=reason, size=item.size
                )
            return False
        self._evict(room.evict, item.id)
        return True

    def _evict(self, victims: tuple[str, ...], for_item: str) -> None:
        for victim in victims:
            self.library.remove(victim)
            self.state.update(victim, state="evicted", bytes_done=0, reason=f"room for {for_item}")
            self._emit(EV_EVICTED, item=victim, for_item=for_item)
        if victims:
            self.write_index()

    # --- download -----------------------------------------------------------------
    def _client_for_cap(self) -> httpx.AsyncClient:
        if self._client is None:
            # A receive buffer of ~1/4 s at the cap: the sender cannot run far ahead of
            # the bucket, so the cap holds on the wire, not just on our side of it.
            rate = self.settings.bandwidth_kbit * 1000 / 8
            rcvbuf = int(min(1 << 20, max(16 * 1024, rate / 4)))
            transport = httpx.AsyncHTTPTransport(
                socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)], retries=0
            )
            o = self.options
            self._client = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(o.read_timeout_s, connect=o.connect_timeout_s),
                follow_redirects=True,
                headers={"User-Agent": "relais-hub-content/1"},
            )
        return self._client

    async def _download(self, item: ContentItem) -> None:
        while self._stale:
            await self._stale.pop().aclose()
        part = self.library.part_path(item.id)
        row = self.state.row(item.id) or {}
        self.state.update(item.id, state="downloading", reason="")
        if part.exists() and part.stat().st_size:
            log.info("content %s: resuming at byte %d", item.id, part.stat().st_size)

        reported = 0

        def progress(p: Progress) -> None:
            nonlocal reported
            self.state.add_fetched(item.id, p.fetched - reported, p.bytes_done)
            reported = p.fetched

        try:
            await fetch(
                self._client_for_cap(),
                item,
                part,
                self.bucket,
                progress,
                keep_going=lambda: not self._stopping and self.in_window(),
                range_chunk=self.range_chunk,
            )
        except Paused:
            return
        except FetchError as e:
            self._failed(item, int(row.get("attempts", 0)) + 1, str(e))
            return
        except OSError as e:  # disk full, read-only file system: keep what is there, retry
            self._failed(item, int(row.get("attempts", 0)) + 1, f"disk: {e.strerror or e}")
            return
        digest = await asyncio.to_thread(sha256_file, part)
        if digest != item.sha256:
            part.unlink(missing_ok=True)  # never served, never resumed from
            self.state.update(item.id, bytes_done=0)
            self._failed(item, int(row.get("attempts", 0)) + 1, "sha256 mismatch")
            return
        self._ready(item, part, source="uplink")

    def _failed(self, item: ContentItem, attempts: int, reason: str) -> None:
        retry = plan.backoff_s(attempts, self.options.retry_base_s)
        self.state.update(
            item.id,
            state="failed",
            reason=reason,
            attempts=attempts,
            next_attempt=self.clock() + retry,
        )
        self._emit(
            EV_FAILED,
            item=item.id,
            reason=reason,
            attempts=attempts,
            retry_in_s=round(retry, 1),
        )

    def _ready(self, item: ContentItem, part: Path, source: str) -> None:
        dest = self.library.publish(item, part)
        if item.kind == "html" and zipfile.is_zipfile(dest):
            self._unpack(item, dest)
        self._mark_ready(item, source)

    def _unpack(self, item: ContentItem, archive: Path) -> None:
        """Make a bundle browsable; a bad archive, or one whose pages do not fit the disk
        budget (pinned and more precious items stay), stays a plain download and says so.
        The unpacked bytes count in the budget with the archive."""
        marker = archive.parent / "site.entry"
        self.state.update(item.id, site_bytes=0)
        try:
            need = bundle.unpacked_size(archive)
            room = plan.plan_room(
                item.model_copy(update={"size": item.size + need}),
                self.state.held(),
                self.budget,
            )
            if room.refused is not None:
                raise bundle.BundleError(f"no room to unpack {need} bytes: {room.detail}")
            self._evict(room.evict, item.id)
            entry = bundle.unpack(archive, archive.parent)
        except (bundle.BundleError, zipfile.BadZipFile, OSError) as e:
            log.warning("content %s: bundle not unpacked: %s", item.id, e)
            self._emit(EV_FAILED, item=item.id, refused="not_browsable", reason=str(e))
            return
        marker.write_text(entry or "", encoding="utf-8")
        self.state.update(item.id, site_bytes=need)

    def _mark_ready(self, item: ContentItem, source: str) -> None:
        self.state.update(
            item.id,
            state="ready",
            bytes_done=item.size,
            reason="",
            attempts=0,
            next_attempt=0,
            source=source,
            last_used=self.clock(),
        )
        self.write_index()
        self._emit(EV_DONE, item=item.id, size=item.size, source=source)

    # --- sneakernet ---------------------------------------------------------------
    async def _maybe_import(self) -> bool:
        folder = self.settings.usb_import_dir
        now = self.clock()
        if folder is None or now - self._last_import < self.options.import_every_s:
            return False
        self._last_import = now
        return await self.import_from(folder) > 0

    async def import_from(self, folder: Path) -> int:
        """Take every wanted item found in ``folder``; return how many were imported."""
        states = {r["id"]: r["state"] for r in self.state.rows()}
        wanted = [i for i in importer.wanted_items(self.manifest, states) if i.size <= self.budget]
        matches = await asyncio.to_thread(importer.scan, folder, wanted, self._hash_cache)
        done = 0
        for m in matches:
            if not self._make_room(m.item, self.state.held()):
                continue
            part = self.library.part_path(m.item.id)
            try:
                await asyncio.to_thread(importer.copy_into, m.path, part)
                digest = await asyncio.to_thread(sha256_file, part)
            except OSError as e:  # a stick pulled out mid-copy
                part.unlink(missing_ok=True)
                log.warning("content %s: import from %s failed: %s", m.item.id, m.path, e)
                continue
            if digest != m.item.sha256:
                part.unlink(missing_ok=True)
                continue
            self._ready(m.item, part, source="import")
            done += 1
        return done

    # --- for the centre -----------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return build_report(self.state, self.budget, self.local_now().date().isoformat())


def build_report(state: ContentState, budget: int, day: str | None = None) -> dict[str, Any]:
    """Per-item state and serving totals, as the centre sees the rollout on this hub."""
    items = []
    used = hits = served = 0
    for r in state.rows():
        held = r["size"] if r["state"] == "ready" else r["bytes_done"]
        used += held if r["state"] in ("ready", "downloading", "failed") else 0
        hits += r["hits"]
        served += r["bytes_served"]
        items.append(
            {
                "id": r["id"],
                "state": r["state"],
                "size": r["size"],
                "bytes_done": r["size"] if r["state"] == "ready" else r["bytes_done"],
                "bytes_fetched": r["bytes_fetched"],
                "reason": r["reason"] or None,
                "source": r["source"] or None,
                "hits": r["hits"],
                "bytes_served": r["bytes_served"],
                "last_used": r["last_used"] or None,
            }
        )
    misses = state.counter("misses")
    today = None
    if day is not None:
        h, m = state.counter(f"day:{day}:hits"), state.counter(f"day:{day}:misses")
        today = round(h / (h + m), 4) if h + m else None
    return {
        "items": items,
        "budget_bytes": budget,
        "used_bytes": used,
        "hits": hits,
        "misses": misses,
        "bytes_served": served,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "hit_ratio_today": today,
    }
