"""The controller's periodic jobs, run by ONE of several controllers: the lease holder.

Any number of ``hubctl controller run`` processes share one database. Jobs that must not
run once per process (downsampling old health; with shared subscriptions, finding gaps in
what all of them stored) run only in the process holding the ``housekeeping`` lease: a
row in ``controller_leases`` renewed every few seconds with a portable upsert, taken over
by another process once it has expired (its holder died or lost the database).

Gaps under a shared subscription: each controller sees only some of a hub's samples, so
gaps are found in the store. Each pass reads, per hub, the samples from its gap cursor
(``hubs.gap_seq``) on and looks for holes; a hole counts as a gap only when it is still
there ``settle_s`` later (batches of several controllers commit out of order, and a
redelivery can come late), so no gap is reported falsely. Open gaps that late samples
filled since are shrunk, split or closed.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from provisioning import registry
from provisioning.storage import ERRORS, Database, DbUrl, connect, transaction

log = logging.getLogger("relais.controller.leader")

LEASE = "housekeeping"
LEASE_S = 10.0
TICK_S = 2.0
GAP_EVERY_S = 5.0
SETTLE_S = 10.0
DOWNSAMPLE_EVERY_S = 3600.0


def holder_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def take_lease(db: Database, holder: str, now: float, ttl: float = LEASE_S) -> bool:
    """Take or renew the lease; True while ``holder`` has it."""
    db.execute(
        "INSERT INTO controller_leases (name, holder, expires) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
        " WHERE controller_leases.holder = excluded.holder OR controller_leases.expires < ?",
        [LEASE, holder, now + ttl, now],
    )
    row = db.execute("SELECT holder FROM controller_leases WHERE name = ?", [LEASE]).fetchone()
    return row is not None and row[0] == holder


def release_lease(db: Database, holder: str) -> None:
    db.execute("DELETE FROM controller_leases WHERE name = ? AND holder = ?", [LEASE, holder])


def _holes(seqs: list[int]) -> list[tuple[int, int]]:
    return [(a + 1, b - 1) for a, b in itertools.pairwise(seqs) if b > a + 1]


def refill_gaps(db: Database, now: float) -> int:
    """Shrink, split or close open health gaps that late samples filled; how many changed."""
    changed = 0
    touched = list(
        db.query(
            "SELECT g.hub_id, g.first_seq, g.last_seq FROM gaps AS g JOIN health AS h"
            " ON h.hub_id = g.hub_id AND h.seq BETWEEN g.first_seq AND g.last_seq"
            " WHERE g.stream = 'health' GROUP BY g.hub_id, g.first_seq, g.last_seq"
        )
    )
    for g in touched:  # rare: only gaps that late samples reached
        hub, a, b = g["hub_id"], int(g["first_seq"]), int(g["last_seq"])
        seqs = [
            int(r[0])
            for r in db.execute(
                "SELECT seq FROM health WHERE hub_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                [hub, a, b],
            ).fetchall()
        ]
        with transaction(db):
            db.execute(
                "DELETE FROM gaps WHERE hub_id = ? AND stream = 'health' AND first_seq = ?",
                [hub, a],
            )
            for lo, hi in _holes([a - 1, *seqs, b + 1]):
                db.execute(
                    "INSERT INTO gaps (hub_id, stream, first_seq, last_seq, detected_at)"
                    " VALUES (?, 'health', ?, ?, ?) ON CONFLICT (hub_id, stream, first_seq)"
                    " DO UPDATE SET last_seq = excluded.last_seq",
                    [hub, lo, hi, now],
                )
        changed += 1
    return changed


class GapFinder:
    """Gaps from the store (shared subscriptions); ``candidates`` are holes seen once."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self.candidates: dict[tuple[str, int, int], float] = {}

    def run(self, db: Database, now: float) -> int:
        """One pass; returns how many gaps it recorded."""
        by_hub: dict[str, list[tuple[int, int | None]]] = {}
        for r in db.query(
            "SELECT t.hub_id, t.seq, t.nxt FROM (SELECT h.hub_id, h.seq,"
            " lead(h.seq) OVER (PARTITION BY h.hub_id ORDER BY h.seq) AS nxt"
            " FROM hubs JOIN health AS h ON h.hub_id = hubs.id"
            " AND h.seq >= coalesce(hubs.gap_seq, 0)) AS t"
            " WHERE t.nxt IS NULL OR t.nxt > t.seq + 1"
        ):
            by_hub.setdefault(r["hub_id"], []).append((int(r["seq"]), r["nxt"]))
        seen: set[tuple[str, int, int]] = set()
        found: list[tuple[str, int, int]] = []
        cursors: list[tuple[int, str]] = []
        for hub, rows in by_hub.items():
            rows.sort()
            cursor = rows[-1][0]  # the hub's newest sample
            for seq, nxt in rows:
                if nxt is None:
                    continue
                key = (hub, seq + 1, int(nxt) - 1)
                seen.add(key)
                first = self.candidates.setdefault(key, now)
                if now - first >= self.settle_s:
                    found.append(key)
                    del self.candidates[key]
                else:
                    cursor = min(cursor, seq)  # look again from just before the hole
            cursors.append((cursor, hub))
        self.candidates = {k: v for k, v in self.candidates.items() if k in seen}
        with transaction(db):
            db.executemany(
                "INSERT INTO gaps (hub_id, stream, first_seq, last_seq, detected_at)"
                " VALUES (?, 'health', ?, ?, ?) ON CONFLICT (hub_id, stream, first_seq)"
                " DO NOTHING",
                [(h, a, b, now) for h, a, b in found],
            )
            db.executemany("UPDATE hubs SET gap_seq = ? WHERE id = ?", sorted(cursors))
        return len(found)


class Housekeeper:
    """A thread with its own connection: renews the lease and, while it holds it, runs
    the jobs. ``shared``: also the gap passes (a lone controller finds gaps in line)."""

    def __init__(self, url: DbUrl, shared: bool, holder: str | None = None) -> None:
        self.url = url
        self.shared = shared
        self.holder = holder or holder_id()
        self.leading = threading.Event()
        self.gaps = GapFinder()
        self.stats: dict[str, Any] = {"gaps": 0, "downsampled": 0, "terms": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _tick(self, db: Database, due: dict[str, float]) -> None:
        now = time.time()
        if not take_lease(db, self.holder, now):
            if self.leading.is_set():
                log.warning("housekeeping lease lost to another controller")
            self.leading.clear()
            return
        if not self.leading.is_set():
            log.info("housekeeping lease taken (%s)", self.holder)
            self.stats["terms"] += 1
            self.leading.set()
            self.gaps = GapFinder(self.gaps.settle_s)
            due["downsample"] = time.monotonic() + 60
        if self.shared and time.monotonic() >= due.get("gaps", 0):
            self.stats["gaps"] += self.gaps.run(db, now)
            refill_gaps(db, now)
            due["gaps"] = time.monotonic() + GAP_EVERY_S
        if time.monotonic() >= due.get("downsample", 0):
            removed = registry.downsample_health(db)
            self.stats["downsampled"] += removed
            if removed:
                log.info("downsampled %d old health samples", removed)
            due["downsample"] = time.monotonic() + DOWNSAMPLE_EVERY_S

    def _run(self) -> None:
        db: Database | None = None
        due: dict[str, float] = {}
        while not self._stop.is_set():
            try:
                db = db or connect(self.url)
                self._tick(db, due)
            except ERRORS:
                log.exception("housekeeping failed; retrying with a new connection")
                self.leading.clear()
                if db is not None:
                    db.close()
                db = None
            self._stop.wait(TICK_S)
        if db is not None:
            if self.leading.is_set():
                release_lease(db, self.holder)
            db.close()
