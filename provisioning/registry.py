"""The fleet registry: hubs, their health history, events, seq gaps and config versions.

Stored through ``provisioning.storage``: SQLite by default (one file under the controller's
state dir), PostgreSQL when ``--db postgresql://...`` says so; the same statements and the
same registered migrations run on both (see that module for the portable subset).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from provisioning.storage import Database, DbUrl, Migrations, open_database, transaction

migrations = Migrations("registry")

HEALTH_FULL_DAYS = 7  # full resolution this long, then one sample per hour per hub

# Every feature's schema in the registry database, as "module:attribute" (imported when
# the registry opens, so a feature's module is only needed where it exists).
MIGRATION_SETS = (
    "provisioning.registry:migrations",
    "provisioning.vouchers:VOUCHERS",
    "provisioning.content_catalogue:CATALOGUE",
    "provisioning.balances:BALANCES",
)


@migrations
def m001_tables(db: Database) -> None:
    db.execute(
        "CREATE TABLE hubs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,"
        " region TEXT, prefecture TEXT, lat DOUBLE PRECISION, lon DOUBLE PRECISION,"
        " groups TEXT DEFAULT '[]',"  # JSON list of named groups
        " cred_fingerprint TEXT, enrolled_at DOUBLE PRECISION, last_seen DOUBLE PRECISION,"
        " online BIGINT DEFAULT 0, session TEXT, state_ts DOUBLE PRECISION,"
        " agent_version TEXT, last_health TEXT,"  # JSON
        " last_seq BIGINT, last_event_seq BIGINT, desired_version BIGINT DEFAULT 0,"
        " reported_version BIGINT, reported_status TEXT, reported_reason TEXT,"
        " reported_ts DOUBLE PRECISION)"
    )
    # The only index is the primary key (hub_id, seq), which also serves a hub's history
    # as a range scan (seq grows with ts). Every extra index would cost each of the
    # fleet's samples one more b-tree insert.
    db.execute(
        "CREATE TABLE health (hub_id TEXT NOT NULL, seq BIGINT NOT NULL,"
        " ts DOUBLE PRECISION NOT NULL, data TEXT NOT NULL, PRIMARY KEY (hub_id, seq))"
    )
    db.execute(
        "CREATE TABLE events (hub_id TEXT NOT NULL, seq BIGINT NOT NULL,"
        " ts DOUBLE PRECISION NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,"
        " PRIMARY KEY (hub_id, seq))"
    )
    db.execute(
        "CREATE TABLE gaps (hub_id TEXT NOT NULL, stream TEXT NOT NULL, first_seq BIGINT NOT NULL,"
        " last_seq BIGINT, detected_at DOUBLE PRECISION, PRIMARY KEY (hub_id, stream, first_seq))"
    )
    db.execute(
        "CREATE TABLE configs (hub_id TEXT NOT NULL, version BIGINT NOT NULL,"
        " created_at DOUBLE PRECISION, source TEXT, config TEXT, PRIMARY KEY (hub_id, version))"
    )


@migrations
def m002_meta(db: Database) -> None:
    db.execute("CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value TEXT)")


@migrations
def m003_scale_out(db: Database) -> None:
    """Several controllers on one database: leases (one of them runs the periodic jobs)
    and each hub's gap-check cursor (gaps found from what all of them stored)."""
    db.execute(
        "CREATE TABLE controller_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL,"
        " expires DOUBLE PRECISION NOT NULL)"
    )
    db.execute("ALTER TABLE hubs ADD COLUMN gap_seq BIGINT")
    db.execute("UPDATE hubs SET gap_seq = last_seq")
    if db.engine == "postgresql":
        # Downsampling finds aged rows by ts (PostgreSQL has no rowid): a BRIN index costs
        # almost nothing per insert for a column that grows with arrival order.
        db.execute("CREATE INDEX health_ts_brin ON health USING brin (ts)")


def migration_sets() -> list[Migrations]:
    import importlib

    out = []
    for spec in MIGRATION_SETS:
        module, _, attr = spec.partition(":")
        out.append(getattr(importlib.import_module(module), attr))
    return out


def open_registry(url: Path | str | DbUrl) -> Database:
    """The registry at ``url`` (a path, ``sqlite:///path`` or ``postgresql://...``), every
    feature's migrations applied."""
    return open_database(url, *migration_sets())


def db_path_from_url(url: str | None, default: Path) -> str:
    """``--db``: a path, ``sqlite:///abs/path``, ``:memory:`` or ``postgresql://...``;
    the URL to open (checked: a bad scheme raises ValueError)."""
    if not url:
        return str(default)
    DbUrl.parse(url)
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


HUB_COLUMNS = ("id", "kind", "name", "region", "prefecture", "lat", "lon", "groups")


def upsert_hub(db: Database, hub: HubRecord, fingerprint: str | None) -> None:
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
    names = [*row, "enrolled_at"]
    updates = ", ".join(f"{n} = excluded.{n}" for n in row if n != "id")  # our names
    db.execute(
        f"INSERT INTO hubs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        f" ON CONFLICT (id) DO UPDATE SET {updates}",
        [*row.values(), time.time()],
    )


def delete_hub(db: Database, hub_id: str) -> bool:
    """Forget a hub and its history (samples, events, gaps, configs) in one transaction;
    central voucher redemptions stay (they are the deployment's, not the hub's)."""
    with transaction(db):
        for table in ("health", "events", "gaps", "configs"):
            db.execute(f"DELETE FROM {table} WHERE hub_id = ?", [hub_id])  # fixed names
        return bool(db.execute("DELETE FROM hubs WHERE id = ?", [hub_id]).rowcount)


def get_hub(db: Database, hub_id: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM hubs WHERE id = ?", [hub_id]))
    return rows[0] if rows else None


def all_hubs(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM hubs ORDER BY id"))


def hub_groups(row: dict[str, Any]) -> list[str]:
    value = json.loads(row.get("groups") or "[]")
    return [str(g) for g in value] if isinstance(value, list) else []


# --- config versions -------------------------------------------------------------------


def next_version(row: dict[str, Any]) -> int:
    """Strictly above anything desired or reported so far (a hub refuses anything else)."""
    return max(int(row.get("desired_version") or 0), int(row.get("reported_version") or 0)) + 1


def record_desired(
    db: Database, hub_id: str, version: int, config: dict[str, Any], source: str
) -> None:
    """Store a desired config (secrets already removed) and bump the hub's desired version."""
    with transaction(db):
        db.execute(
            "INSERT INTO configs (hub_id, version, created_at, source, config)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (hub_id, version) DO UPDATE SET"
            " created_at = excluded.created_at, source = excluded.source,"
            " config = excluded.config",
            [hub_id, version, time.time(), source, json.dumps(config, sort_keys=True)],
        )
        db.execute(
            "UPDATE hubs SET desired_version = ? WHERE id = ? AND desired_version < ?",
            [version, hub_id, version],
        )


def latest_config(db: Database, hub_id: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT config FROM configs WHERE hub_id = ? ORDER BY version DESC LIMIT 1", [hub_id]
    ).fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
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


_HEALTH_COLUMNS = (("hub_id", "text"), ("seq", "bigint"), ("ts", "float8"), ("data", "text"))
_EVENT_COLUMNS = (*_HEALTH_COLUMNS[:3], ("type", "text"), ("data", "text"))


def _insert_samples(
    db: Database, table: str, columns: tuple[tuple[str, str], ...], rows: list[Any]
) -> None:
    """Insert samples, skipping those already stored (primary key (hub_id, seq)).

    PostgreSQL: one statement whatever the batch size, the rows sent as one JSON array of
    arrays (orjson writes it in C) that the server spreads back into rows. A pipelined
    ``executemany`` costs the controller a Bind/Execute per row, and list parameters go
    through psycopg's array dumper in Python: each was about a fifth of the controller's
    CPU per sample. ``DO NOTHING`` also drops a sample repeated within the batch.
    SQLite: one prepared statement over the rows."""
    names = ", ".join(name for name, _type in columns)
    if db.engine == "postgresql":
        fields = ", ".join(f"(r->>{i})::{t}" for i, (_name, t) in enumerate(columns))
        db.execute(
            f"INSERT INTO {table} ({names}) SELECT {fields}"
            " FROM jsonb_array_elements(?::jsonb) AS r ON CONFLICT (hub_id, seq) DO NOTHING",
            (orjson.dumps(rows).decode(),),
        )
        return
    marks = ", ".join("?" * len(columns))
    db.executemany(
        f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT (hub_id, seq) DO NOTHING",
        rows,
    )


def write_batch(db: Database, batch: Batch) -> None:
    """One transaction: every sample of the batch is on disk together, or none is.

    Samples go in with one statement per table (``_insert_samples``); a sample already
    stored (a redelivery, or one another controller took) is skipped by the primary key
    (hub_id, seq)."""
    with transaction(db):
        if batch.health:
            _insert_samples(db, "health", _HEALTH_COLUMNS, batch.health)
        if batch.events:
            _insert_samples(db, "events", _EVENT_COLUMNS, batch.events)
        if batch.gaps_remove:
            db.executemany(
                "DELETE FROM gaps WHERE hub_id = ? AND stream = ? AND first_seq = ?",
                batch.gaps_remove,
            )
        if batch.gaps_add:
            db.executemany(
                "INSERT INTO gaps (hub_id, stream, first_seq, last_seq, detected_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (hub_id, stream, first_seq) DO UPDATE"
                " SET last_seq = excluded.last_seq, detected_at = excluded.detected_at",
                batch.gaps_add,
            )
        # One executemany per set of columns (most hubs in a batch share one). Hubs are
        # updated in id order so that two controllers' batches lock rows in one order.
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for hub_id in sorted(batch.hub_updates):
            cols = batch.hub_updates[hub_id]
            names = tuple(sorted(cols))
            groups.setdefault(names, []).append([cols[n] for n in names] + [hub_id])
        for names, rows in groups.items():
            sets = ", ".join(f"{n} = ?" for n in names)  # column names are ours, not input
            db.executemany(f"UPDATE hubs SET {sets} WHERE id = ?", rows)


def repair_cursors(db: Database) -> None:
    """Bring hubs' last_seq/last_health up to the samples actually stored.

    The controller commits samples at once but refreshes the hubs' summary columns at
    most every few seconds; after a kill -9 the samples are the truth.
    """
    with transaction(db):
        db.execute(
            "UPDATE hubs SET last_seq = h.seq, last_health = h.data FROM ("
            " SELECT x.hub_id, x.seq, x.data FROM health AS x JOIN ("
            "  SELECT hub_id, max(seq) AS seq FROM health GROUP BY hub_id) AS m"
            " ON x.hub_id = m.hub_id AND x.seq = m.seq) AS h"
            " WHERE hubs.id = h.hub_id AND (hubs.last_seq IS NULL OR hubs.last_seq < h.seq)"
        )
        db.execute(
            "UPDATE hubs SET last_event_seq = e.seq FROM ("
            " SELECT hub_id, max(seq) AS seq FROM events GROUP BY hub_id) AS e"
            " WHERE hubs.id = e.hub_id"
            " AND (hubs.last_event_seq IS NULL OR hubs.last_event_seq < e.seq)"
        )


def load_cursors(db: Database) -> dict[str, dict[str, Any]]:
    """What the ingester must remember across restarts: seqs, sessions, open gaps."""
    repair_cursors(db)
    return {
        row["id"]: row
        for row in db.query(
            "SELECT id, last_seq, last_event_seq, session, state_ts, online, reported_version"
            " FROM hubs"
        )
    }


def open_gaps(db: Database) -> dict[tuple[str, str], list[tuple[int, int]]]:
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for row in db.query("SELECT hub_id, stream, first_seq, last_seq FROM gaps ORDER BY first_seq"):
        out.setdefault((row["hub_id"], row["stream"]), []).append(
            (row["first_seq"], row["last_seq"])
        )
    return out


def health_series(
    db: Database, hub_id: str, since: float, limit: int = 2000
) -> list[tuple[float, dict[str, Any]]]:
    rows = db.query(
        "SELECT ts, data FROM health WHERE hub_id = ? ORDER BY seq DESC LIMIT ?",
        [hub_id, limit],
    )
    out = [(float(r["ts"]), json.loads(r["data"])) for r in rows if r["ts"] >= since]
    out.reverse()
    return out


def recent_events(db: Database, hub_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT seq, ts, type, data FROM events WHERE hub_id = ? ORDER BY seq DESC LIMIT ?",
            [hub_id, limit],
        )
    )


def seq_counts(db: Database, hub_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Per hub: samples stored, min and max seq (the benchmark's 'nothing lost' check)."""
    out: dict[str, Any] = {}
    for r in db.query(
        "SELECT hub_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM health GROUP BY hub_id"
    ):
        if hub_ids is None or r["hub_id"] in hub_ids:
            out[r["hub_id"]] = (r["n"], r["lo"], r["hi"])
    return out


def register_many(db: Database, hubs: Iterable[HubRecord]) -> None:
    """Register hubs without credentials (the simulator's fleet)."""
    with transaction(db):
        for h in hubs:
            upsert_hub(db, h, None)


def downsample_health(db: Database, now: float | None = None) -> int:
    """Keep full resolution for HEALTH_FULL_DAYS; older, the last sample of each hour
    (provisioning.downsample does it, by rowid on SQLite, by ts on PostgreSQL)."""
    from provisioning.downsample import downsample

    return downsample(db, HEALTH_FULL_DAYS, now)
