"""The SQLite outbox: every health sample and event is written here first.

A row is published with QoS 1 and deleted only once the broker's PUBACK came back, so a
broker outage, an uplink cut or a kill -9 of the agent loses nothing: what is not
acknowledged is still in the table and is published again.

Delivery semantics: **at least once, duplicates removable by ``(hub_id, kind, seq)``**.
Exactly once is not possible with QoS 1 across a crash: if the agent dies after the broker
received a message but before the PUBACK was read (or before the acknowledged rows were
deleted, deletes are batched), the row is published again after restart. ``seq`` is
assigned in the same transaction that writes the row, so a given ``seq`` always carries
the same payload and a subscriber can drop repeats by ``seq`` alone.

``seq`` is a per-kind counter (``health`` and ``event``) kept in ``outbox_seq``; it grows
by one per row and survives restarts and kill -9 (it commits with the row).

Disk budget: rows are counted as payload bytes plus ``ROW_OVERHEAD``. Past the budget,
``plan_thinning`` drops every other *health* sample starting from the oldest (repeatedly,
so old history gets sparser while recent history stays dense); events are never thinned.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils

from hub_agent.store import Migrations, transaction

Kind = Literal["health", "event"]
KINDS: tuple[Kind, ...] = ("health", "event")

# SQLite row, index and page slack per queued message (measured: ~40-60 bytes a row).
ROW_OVERHEAD = 64
# Thin to this fraction of the budget so that thinning does not run on every insert.
THIN_TARGET = 0.9

OUTBOX = Migrations("outbox")
log = logging.getLogger(__name__)


@OUTBOX
def m001_outbox(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE outbox ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " kind TEXT NOT NULL,"
        " seq INTEGER NOT NULL,"
        " ts REAL NOT NULL,"
        " payload BLOB NOT NULL)"
    )
    db.execute("CREATE UNIQUE INDEX outbox_kind_seq ON outbox(kind, seq)")
    db.execute("CREATE TABLE outbox_seq (kind TEXT PRIMARY KEY, last INTEGER NOT NULL)")


def encode(obj: dict[str, Any]) -> bytes:
    """Compact JSON: no spaces, UTF-8 (uplink bytes are paid for)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class RowSize:
    id: int
    kind: str
    size: int


def plan_thinning(rows: Sequence[RowSize], budget_bytes: int) -> list[int]:
    """Ids to delete so the rows fit ``budget_bytes``: every other old health sample.

    ``rows`` are oldest first. Each pass walks the remaining health samples from the
    oldest and drops the 2nd, 4th, ... until enough is freed; if one pass is not enough,
    another pass halves the survivors again. Events are kept whatever the budget.
    """
    excess = sum(r.size for r in rows) - budget_bytes
    if excess <= 0:
        return []
    health = [r for r in rows if r.kind == "health"]
    dropped: list[int] = []
    while excess > 0 and len(health) >= 2:
        kept: list[RowSize] = []
        for i, r in enumerate(health):
            if excess > 0 and i % 2 == 1:
                dropped.append(r.id)
                excess -= r.size
            else:
                kept.append(r)
        health = kept
    return dropped


def days_that_fit(budget_bytes: int, sample_bytes: int, interval_s: float) -> float:
    """How many days of health samples fit the budget without thinning."""
    per_day = 86_400 / interval_s * (sample_bytes + ROW_OVERHEAD)
    return budget_bytes / per_day


class TokenBucket:
    """Rate bound for the drain: ``rate`` messages a second, bursts up to ``burst``."""

    def __init__(self, rate: float | None, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, (rate or 1.0) / 10)
        self.tokens = self.burst
        self.stamp: float | None = None

    def delay(self, now: float) -> float:
        """Take one token; return how long to wait before sending (0: send now)."""
        if self.rate is None:
            return 0.0
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass(frozen=True)
class Queued:
    id: int
    kind: Kind
    seq: int
    ts: float
    payload: bytes


class Outbox:
    """The queue itself. One instance per process, used from the agent's event loop."""

    def __init__(self, db: sqlite_utils.Database, hub_id: str, budget_bytes: int) -> None:
        OUTBOX.apply(db)
        self.db = db
        self.hub_id = hub_id
        self.budget_bytes = budget_bytes
        row = db.execute(
            f"SELECT count(*), coalesce(sum(length(payload)), 0) + count(*) * {ROW_OVERHEAD}"
            " FROM outbox"
        ).fetchone()
        self.bytes = int(row[1])
        self.thinned = self.last_seq("thinned")

    def put(self, kind: Kind, fields: dict[str, Any], ts: float | None = None) -> int:
        """Write one message with the next ``seq`` of its kind; return that seq."""
        ts = time.time() if ts is None else ts
        with transaction(self.db):
            cur = self.db.execute("SELECT last FROM outbox_seq WHERE kind = ?", [kind]).fetchone()
            seq = (int(cur[0]) if cur else 0) + 1
            # whole seconds: samples are a minute apart and seq orders them (4 bytes less
            # a message on a metered uplink)
            body = {"hub_id": self.hub_id, "seq": seq, "ts": round(ts), **fields}
            payload = encode(body)
            self.db.execute(
                "INSERT INTO outbox (kind, seq, ts, payload) VALUES (?, ?, ?, ?)",
                [kind, seq, ts, payload],
            )
            self.db.execute(
                "INSERT INTO outbox_seq (kind, last) VALUES (?, ?)"
                " ON CONFLICT(kind) DO UPDATE SET last = excluded.last",
                [kind, seq],
            )
        self.bytes += len(payload) + ROW_OVERHEAD
        if self.bytes > self.budget_bytes:
            self.enforce_budget()
        return seq

    def enforce_budget(self) -> int:
        rows = [
            RowSize(int(r[0]), str(r[1]), int(r[2]) + ROW_OVERHEAD)
            for r in self.db.execute("SELECT id, kind, length(payload) FROM outbox ORDER BY id")
        ]
        drop = plan_thinning(rows, int(self.budget_bytes * THIN_TARGET))
        if drop:
            with transaction(self.db):
                self._delete(drop)
                # The running total is kept with the seq counters (kind "thinned"), so the
                # centre can tell seqs thinned away from seqs lost, across restarts.
                self.db.execute(
                    "INSERT INTO outbox_seq (kind, last) VALUES ('thinned', ?)"
                    " ON CONFLICT(kind) DO UPDATE SET last = last + excluded.last",
                    [len(drop)],
                )
            self.thinned += len(drop)
            log.warning("outbox over budget: thinned %d old health samples", len(drop))
        gone = set(drop)
        self.bytes = sum(r.size for r in rows if r.id not in gone)
        return len(drop)

    def after(self, cursor: int, limit: int) -> list[Queued]:
        """Up to ``limit`` rows with id > cursor, oldest first (the drain order)."""
        return [
            Queued(int(r[0]), r[1], int(r[2]), float(r[3]), bytes(r[4]))
            for r in self.db.execute(
                "SELECT id, kind, seq, ts, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                [cursor, limit],
            )
        ]

    def get(self, ids: Iterable[int]) -> list[Queued]:
        wanted = list(ids)
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        return [
            Queued(int(r[0]), r[1], int(r[2]), float(r[3]), bytes(r[4]))
            for r in self.db.execute(
                f"SELECT id, kind, seq, ts, payload FROM outbox WHERE id IN ({marks}) ORDER BY id",
                wanted,
            )
        ]

    def ack(self, ids: Sequence[int]) -> None:
        """The broker has these: delete them in one transaction (one fsync)."""
        if ids:
            self._delete(ids)

    def _delete(self, ids: Sequence[int]) -> None:
        freed = 0
        with transaction(self.db):
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                row = self.db.execute(
                    f"SELECT coalesce(sum(length(payload)), 0), count(*) FROM outbox"
                    f" WHERE id IN ({marks})",
                    chunk,
                ).fetchone()
                freed += int(row[0]) + int(row[1]) * ROW_OVERHEAD
                self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
        self.bytes -= freed

    def depth(self) -> dict[str, int]:
        out: dict[str, int] = {k: 0 for k in KINDS}
        for kind, n in self.db.execute("SELECT kind, count(*) FROM outbox GROUP BY kind"):
            out[str(kind)] = int(n)
        return out

    def oldest_ts(self, kind: Kind = "health") -> float | None:
        row = self.db.execute("SELECT min(ts) FROM outbox WHERE kind = ?", [kind]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def last_seq(self, kind: Kind | Literal["thinned"]) -> int:
        row = self.db.execute("SELECT last FROM outbox_seq WHERE kind = ?", [kind]).fetchone()
        return int(row[0]) if row else 0
