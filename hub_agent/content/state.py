"""Per-item state in the hub database (``Migrations("content")``).

One row per manifest item: its state, the bytes on disk, retry bookkeeping and usage
(hits, bytes served, last use). Every transition is one committed statement or one
transaction, so a kill -9 leaves a row that ``sync`` can pick up from: a "downloading"
row simply resumes from the .part file's real length.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import sqlite_utils

from hub_agent.content.plan import Held, State
from hub_agent.store import Migrations, transaction

CONTENT = Migrations("content")


@CONTENT
def m001_content_state(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE content_state ("
        " id TEXT PRIMARY KEY,"
        " state TEXT NOT NULL,"
        " size INTEGER NOT NULL,"
        " sha256 TEXT NOT NULL,"
        " pinned INTEGER NOT NULL DEFAULT 0,"
        " bytes_done INTEGER NOT NULL DEFAULT 0,"
        " bytes_fetched INTEGER NOT NULL DEFAULT 0,"  # uplink bytes spent, all attempts
        " reason TEXT NOT NULL DEFAULT '',"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt REAL NOT NULL DEFAULT 0,"
        " source TEXT NOT NULL DEFAULT '',"  # uplink | import
        " last_used REAL NOT NULL DEFAULT 0,"
        " hits INTEGER NOT NULL DEFAULT 0,"
        " bytes_served INTEGER NOT NULL DEFAULT 0,"
        " updated REAL NOT NULL)"
    )
    # Serving counters not tied to an item (misses, the access log's read offset).
    db.execute("CREATE TABLE content_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")


@CONTENT
def m002_site_bytes(db: sqlite_utils.Database) -> None:
    # an HTML bundle's unpacked pages, counted in the disk budget beside the archive
    db.execute("ALTER TABLE content_state ADD COLUMN site_bytes INTEGER NOT NULL DEFAULT 0")


_FIELDS = (
    "state",
    "site_bytes",
    "bytes_done",
    "bytes_fetched",
    "reason",
    "attempts",
    "next_attempt",
    "source",
    "last_used",
)


class ContentState:
    """Thin accessors over the two tables; the sync loop is the only writer of states."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def rows(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM content_state ORDER BY id"))

    def row(self, item_id: str) -> dict[str, Any] | None:
        for r in self.db.query("SELECT * FROM content_state WHERE id = ?", [item_id]):
            return r
        return None

    def held(self) -> dict[str, Held]:
        out = {}
        for r in self.rows():
            state: State = r["state"]
            # a failed download keeps its .part (resumed later): it counts against the budget
            on_disk = r["size"] + r["site_bytes"] if state == "ready" else r["bytes_done"]
            out[r["id"]] = Held(
                id=r["id"],
                state=state,
                size=r["size"],
                sha256=r["sha256"],
                pinned=bool(r["pinned"]),
                bytes_on_disk=on_disk if state in ("ready", "downloading", "failed") else 0,
                last_used=r["last_used"],
                hits=r["hits"],
                next_attempt=r["next_attempt"],
                reason=r["reason"],
            )
        return out

    def add(self, item_id: str, size: int, sha256: str, pinned: bool) -> None:
        self.db.execute(
            "INSERT INTO content_state (id, state, size, sha256, pinned, updated)"
            " VALUES (?, 'queued', ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET state='queued', size=excluded.size,"
            " sha256=excluded.sha256, pinned=excluded.pinned, bytes_done=0, reason='',"
            " attempts=0, next_attempt=0, updated=excluded.updated",
            [item_id, size, sha256, int(pinned), time.time()],
        )

    def set_pinned(self, item_id: str, pinned: bool) -> None:
        self.db.execute("UPDATE content_state SET pinned = ? WHERE id = ?", [int(pinned), item_id])

    def update(self, item_id: str, **fields: Any) -> None:
        bad = set(fields) - set(_FIELDS)
        if bad:
            raise ValueError(f"unknown content_state fields: {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE content_state SET {sets}, updated = ? WHERE id = ?",  # names checked above
            [*fields.values(), time.time(), item_id],
        )

    def add_fetched(self, item_id: str, n: int, bytes_done: int) -> None:
        self.db.execute(
            "UPDATE content_state SET bytes_fetched = bytes_fetched + ?, bytes_done = ?,"
            " updated = ? WHERE id = ?",
            [n, bytes_done, time.time(), item_id],
        )

    def delete(self, item_id: str) -> None:
        self.db.execute("DELETE FROM content_state WHERE id = ?", [item_id])

    # --- serving counters ---------------------------------------------------------
    def counter(self, name: str) -> int:
        for r in self.db.query("SELECT value FROM content_counters WHERE name = ?", [name]):
            return int(r["value"])
        return 0

    def record_usage(
        self,
        per_item: dict[str, tuple[int, int, float]],
        misses: int,
        log_offset: int,
        log_inode: int,
        day: str | None = None,
    ) -> None:
        """Hits, bytes and last use per item, plus misses and the log position, at once.

        One transaction, so after a crash the counters and the log offset agree and no
        access-log line is counted twice. ``day`` (local YYYY-MM-DD) also keeps today's
        hits and misses, for the health sample's "hit ratio today"; older days are dropped.
        """
        with transaction(self.db):
            if day is not None:
                self.db.execute(
                    "DELETE FROM content_counters WHERE name LIKE 'day:%' AND name NOT LIKE ?",
                    [f"day:{day}:%"],
                )
                hits = sum(h for h, _, _ in per_item.values())
                for name, n in ((f"day:{day}:hits", hits), (f"day:{day}:misses", misses)):
                    self._add_counter(name, n)
            for item_id, (hits, nbytes, last) in per_item.items():
                self.db.execute(
                    "UPDATE content_state SET hits = hits + ?, bytes_served = bytes_served + ?,"
                    " last_used = MAX(last_used, ?) WHERE id = ?",
                    [hits, nbytes, last, item_id],
                )
            for name, value in (("log_offset", log_offset), ("log_inode", log_inode)):
                self._set_counter(name, value)
            self._add_counter("misses", misses)

    def _add_counter(self, name: str, n: int) -> None:
        self.db.execute(
            "INSERT INTO content_counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [name, n],
        )

    def _set_counter(self, name: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO content_counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            [name, value],
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())
