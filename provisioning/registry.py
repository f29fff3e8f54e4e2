"""The fleet registry: hubs, their health history, events, seq gaps and config versions.

SQLite through sqlite-utils by default (one file under the controller's state dir). The
schema uses only portable types (TEXT, INTEGER, REAL, JSON kept as TEXT) and plain
``INSERT ... ON CONFLICT`` upserts, so the same tables run on PostgreSQL for a national
deployment (docs/operations.md says how).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from hub_agent.store import Migrations, open_db, transaction

migrations = Migrations("registry")

HEALTH_FULL_DAYS = 7  # full resolution this long, then one sample per hour per hub


@migrations
def m001_tables(db: sqlite_utils.Database) -> None:
    db.table("hubs").create(
        {
            "id": str,
            "kind": str,
            "name": str,
            "region": str,
            "prefecture": str,
            "lat": float,
            "lon": float,
            "groups": str,  # JSON list of named groups
            "cred_fingerprint": str,
            "enrolled_at": float,
            "last_seen": float,
            "online": int,
            "session": str,
            "state_ts": float,
            "agent_version": str,
            "last_health": str,  # JSON
            "last_seq": int,
            "last_event_seq": int,
            "desired_version": int,
            "reported_version": int,
            "reported_status": str,
            "reported_reason": str,
            "reported_ts": float,
        },
        pk="id",
        not_null={"kind", "name"},
        defaults={"online": 0, "desired_version": 0, "groups": "[]"},
    )
    # Rows append in arrival order (rowid); the only index is the primary key
    # (hub_id, seq), which also serves a hub's history as a range scan (seq grows with
    # ts). Every extra index would cost each of the fleet's samples one more b-tree insert.
    db.execute(
        "CREATE TABLE health (hub_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,"
        " data TEXT NOT NULL, PRIMARY KEY (hub_id, seq))"
    )
    db.execute(
        "CREATE TABLE events (hub_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,"
        " type TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (hub_id, seq))"
    )
    db.table("gaps").create(
        {"hub_id": str, "stream": str, "first_seq": int, "last_seq": int, "detected_at": float},
        pk=("hub_id", "stream", "first_seq"),
    )
    db.table("configs").create(
        {"hub_id": str, "version": int, "created_at": float, "source": str, "config": str},
        pk=("hub_id", "version"),
    )


@migrations
def m002_meta(db: sqlite_utils.Database) -> None:
    db.table("registry_meta").create({"key": str, "value": str}, pk="key")


def open_registry(path: Path | str) -> sqlite_utils.Database:
    return open_db(path, migrations)


def db_path_from_url(url: str | None, default: Path) -> Path | str:
    """``--db``: a path, ``sqlite:///abs/path`` or ``:memory:``; PostgreSQL is documented only."""
    if not url:
        return default
    if url.startswith("sqlite:///"):
        return url[len("sqlite://") :]
    if url.startswith(("postgres://", "postgresql://")):
        raise ValueError(
            "--db: PostgreSQL is not wired in this build; see docs/operations.md "
            "(same schema, psycopg driver)"
        )
    if "://" in url:
        raise ValueError(f"--db: unsupported URL scheme in {url.split('://')[0]!r}")
    return url


@dataclass(frozen=True)
class HubRecord:
    id: str
    kind: str
    name: str
    region: str | None = None
    prefecture: str | None = None
    lat: float | None = None
    lon: float | None = None
    groups: tuple[str, ...] = ()


def upsert_hub(db: sqlite_utils.Database, hub: HubRecord, fingerprint: str | None) -> None:
    now = time.time()
    row: dict[str, Any] = {
        "id": hub.id,
        "kind": hub.kind,
        "name": hub.name,
        "region": hub.region,
        "prefecture": hub.prefecture,
        "lat": hub.lat,
        "lon": hub.lon,
        "groups": json.dumps(sorted(set(hub.groups))),
    }
    if fingerprint is not None:
        row["cred_fingerprint"] = fingerprint
    existing = get_hub(db, hub.id)
    if existing is None:
        row["enrolled_at"] = now
        db.table("hubs").insert(row)
    else:
        db.table("hubs").update(hub.id, row)


def delete_hub(db: sqlite_utils.Database, hub_id: str) -> bool:
    """Forget a hub and its history (samples, events, gaps, configs) in one transaction;
    central voucher redemptions stay (they are the deployment's, not the hub's)."""
    with transaction(db):
        for table in ("health", "events", "gaps", "configs"):
            db.execute(f"DELETE FROM {table} WHERE hub_id = ?", [hub_id])  # fixed names
        return bool(db.execute("DELETE FROM hubs WHERE id = ?", [hub_id]).rowcount)


def get_hub(db: sqlite_utils.Database, hub_id: str) -> dict[str, Any] | None:
    rows = list(db.table("hubs").rows_where("id = ?", [hub_id]))
    return rows[0] if rows else None


def all_hubs(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return list(db.table("hubs").rows_where(order_by="id"))


def hub_groups(row: dict[str, Any]) -> list[str]:
    value = json.loads(row.get("groups") or "[]")
    return [str(g) for g in value] if isinstance(value, list) else []


# --- config versions -------------------------------------------------------------------


def next_version(row: dict[str, Any]) -> int:
    """Strictly above anything desired or reported so far (a hub refuses anything else)."""
    return max(int(row.get("desired_version") or 0), int(row.get("reported_version") or 0)) + 1


def record_desired(
    db: sqlite_utils.Database, hub_id: str, version: int, config: dict[str, Any], source: str
) -> None:
    """Store a desired config (secrets already removed) and bump the hub's desired version."""
    with transaction(db):
        db.table("configs").insert(
            {
                "hub_id": hub_id,
                "version": version,
                "created_at": time.time(),
                "source": source,
                "config": json.dumps(config, sort_keys=True),
            },
            replace=True,
        )
        db.execute(
            "UPDATE hubs SET desired_version = ? WHERE id = ? AND desired_version < ?",
            [version, hub_id, version],
        )


def latest_config(db: sqlite_utils.Database, hub_id: str) -> dict[str, Any] | None:
    rows = list(
        db.table("configs").rows_where("hub_id = ?", [hub_id], order_by="version desc", limit=1)
    )
    if not rows:
        return None
    value = json.loads(rows[0]["config"])
    return value if isinstance(value, dict) else None


# --- ingest ----------------------------------------------------------------------------


@dataclass
class Batch:
    """What one ingest transaction writes (filled by controller.ingest, pure)."""

    health: list[tuple[str, int, float, str]] = field(default_factory=list)
    events: list[tuple[str, int, float, str, str]] = field(default_factory=list)
    hub_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    gaps_add: list[tuple[str, str, int, int, float]] = field(default_factory=list)
    gaps_remove: list[tuple[str, str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.health) + len(self.events) + len(self.hub_updates)


def write_batch(db: sqlite_utils.Database, batch: Batch) -> None:
    """One transaction: every sample of the batch is on disk together, or none is."""
    conn = db.conn
    with transaction(db):
        if batch.health:
            conn.executemany(
                "INSERT OR IGNORE INTO health (hub_id, seq, ts, data) VALUES (?, ?, ?, ?)",
                batch.health,
            )
        if batch.events:
            conn.executemany(
                "INSERT OR IGNORE INTO events (hub_id, seq, ts, type, data) VALUES (?, ?, ?, ?, ?)",
                batch.events,
            )
        for key in batch.gaps_remove:
            conn.execute("DELETE FROM gaps WHERE hub_id = ? AND stream = ? AND first_seq = ?", key)
        if batch.gaps_add:
            conn.executemany(
                "INSERT OR REPLACE INTO gaps (hub_id, stream, first_seq, last_seq, detected_at) "
                "VALUES (?, ?, ?, ?, ?)",
                batch.gaps_add,
            )
        # One executemany per set of columns (most hubs in a batch share one).
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for hub_id, cols in batch.hub_updates.items():
            names = tuple(sorted(cols))
            groups.setdefault(names, []).append([cols[n] for n in names] + [hub_id])
        for names, rows in groups.items():
            sets = ", ".join(f"{n} = ?" for n in names)  # column names are ours, not input
            conn.executemany(f"UPDATE hubs SET {sets} WHERE id = ?", rows)


def repair_cursors(db: sqlite_utils.Database) -> None:
    """Bring hubs' last_seq/last_health up to the samples actually stored.

    The controller commits samples at once but refreshes the hubs' summary columns at
    most every few seconds; after a kill -9 the samples are the truth.
    """
    with transaction(db):
        db.execute(
            "UPDATE hubs SET last_seq = h.seq, last_health = h.data FROM ("
            " SELECT hub_id, max(seq) AS seq, data FROM health GROUP BY hub_id) AS h"
            " WHERE hubs.id = h.hub_id AND (hubs.last_seq IS NULL OR hubs.last_seq < h.seq)"
        )
        db.execute(
            "UPDATE hubs SET last_event_seq = e.seq FROM ("
            " SELECT hub_id, max(seq) AS seq FROM events GROUP BY hub_id) AS e"
            " WHERE hubs.id = e.hub_id"
            " AND (hubs.last_event_seq IS NULL OR hubs.last_event_seq < e.seq)"
        )


def load_cursors(db: sqlite_utils.Database) -> dict[str, dict[str, Any]]:
    """What the ingester must remember across restarts: seqs, sessions, open gaps."""
    repair_cursors(db)
    out: dict[str, dict[str, Any]] = {}
    for row in db.query(
        "SELECT id, last_seq, last_event_seq, session, state_ts, online, reported_version FROM hubs"
    ):
        out[row["id"]] = dict(row)
    return out


def open_gaps(db: sqlite_utils.Database) -> dict[tuple[str, str], list[tuple[int, int]]]:
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for row in db.query("SELECT hub_id, stream, first_seq, last_seq FROM gaps ORDER BY first_seq"):
        out.setdefault((row["hub_id"], row["stream"]), []).append(
            (row["first_seq"], row["last_seq"])
        )
    return out


def health_series(
    db: sqlite_utils.Database, hub_id: str, since: float, limit: int = 2000
) -> list[tuple[float, dict[str, Any]]]:
    rows = db.query(
        "SELECT ts, data FROM health WHERE hub_id = ? ORDER BY seq DESC LIMIT ?",
        [hub_id, limit],
    )
    out = [(float(r["ts"]), json.loads(r["data"])) for r in rows if r["ts"] >= since]
    out.reverse()
    return out


def recent_events(db: sqlite_utils.Database, hub_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT seq, ts, type, data FROM events WHERE hub_id = ? ORDER BY seq DESC LIMIT ?",
            [hub_id, limit],
        )
    )


def _first_rowid_at_or_after(db: sqlite_utils.Database, lo: int, hi: int, cutoff: float) -> int:
    """Binary search over rowids (rows append in arrival order, so ts grows with rowid):
    the first rowid in (lo, hi] whose sample is not older than ``cutoff`` (hi + 1: none)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = db.conn.execute(
            "SELECT ts FROM health WHERE rowid >= ? ORDER BY rowid LIMIT 1", [mid]
        ).fetchone()
        if row is None or row[0] >= cutoff:
            hi = mid - 1
        else:
            lo = mid
    return lo + 1


def downsample_health(db: sqlite_utils.Database, now: float | None = None) -> int:
    """Keep full resolution for HEALTH_FULL_DAYS; older, keep the last sample of each hour.

    Each run only visits the rows that aged past the cutoff since the previous run (a rowid
    range found by binary search, no index on ts needed), so its cost does not grow with
    the size of the table.
    """
    cutoff = (now if now is not None else time.time()) - HEALTH_FULL_DAYS * 86_400
    with transaction(db):
        done_row = db.conn.execute(
            "SELECT value FROM registry_meta WHERE key = 'downsampled_rowid'"
        ).fetchone()
        done = int(done_row[0]) if done_row else 0
        top = db.conn.execute("SELECT max(rowid) FROM health").fetchone()[0] or 0
        upto = _first_rowid_at_or_after(db, done, top, cutoff) - 1
        if upto <= done:
            return 0
        cur = db.conn.execute(
            "DELETE FROM health WHERE rowid > ? AND rowid <= ? AND rowid NOT IN ("
            " SELECT max(rowid) FROM health WHERE rowid > ? AND rowid <= ?"
            " GROUP BY hub_id, CAST(ts / 3600 AS INTEGER))",
            [done, upto, done, upto],
        )
        db.conn.execute(
            "INSERT OR REPLACE INTO registry_meta (key, value) VALUES ('downsampled_rowid', ?)",
            [str(upto)],
        )
    return int(cur.rowcount)


def seq_counts(db: sqlite_utils.Database, hub_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Per hub: samples stored, min and max seq (the benchmark's 'nothing lost' check)."""
    out: dict[str, Any] = {}
    for r in db.query(
        "SELECT hub_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM health GROUP BY hub_id"
    ):
        if hub_ids is None or r["hub_id"] in hub_ids:
            out[r["hub_id"]] = (r["n"], r["lo"], r["hi"])
    return out


def register_many(db: sqlite_utils.Database, hubs: Iterable[HubRecord]) -> None:
    """Register hubs without credentials (the simulator's fleet)."""
    with transaction(db):
        for h in hubs:
            upsert_hub(db, h, None)
