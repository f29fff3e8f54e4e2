"""Health downsampling: full resolution for some days, then the last sample of each hour.

Each run visits only the rows that aged past the cutoff since the previous run, so its cost
does not grow with the table. How those rows are found is the one place the engines differ
in kind, not in dialect: SQLite appends rows in rowid order (a binary search over rowids
finds the cutoff, no index on ts needed); PostgreSQL has no stable row order, so it keeps a
ts watermark and reads the range through a BRIN index on ts (registry migration m003).
"""

from __future__ import annotations

import time

from provisioning.storage import Database, transaction

_SET_META = (
    "INSERT INTO registry_meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def _meta(db: Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM registry_meta WHERE key = ?", [key]).fetchone()
    return None if row is None else str(row[0])


def _first_rowid_at_or_after(db: Database, lo: int, hi: int, cutoff: float) -> int:
    """Binary search over rowids (rows append in arrival order, so ts grows with rowid):
    the first rowid in (lo, hi] whose sample is not older than ``cutoff`` (hi + 1: none)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = db.execute(
            "SELECT ts FROM health WHERE rowid >= ? ORDER BY rowid LIMIT 1", [mid]
        ).fetchone()
        if row is None or row[0] >= cutoff:
            hi = mid - 1
        else:
            lo = mid
    return lo + 1


def _sqlite(db: Database, cutoff: float) -> int:
    done = int(_meta(db, "downsampled_rowid") or 0)
    top = db.execute("SELECT max(rowid) FROM health").fetchone()[0] or 0
    upto = _first_rowid_at_or_after(db, done, top, cutoff) - 1
    if upto <= done:
        return 0
    cur = db.execute(
        "DELETE FROM health WHERE rowid > ? AND rowid <= ? AND rowid NOT IN ("
        " SELECT max(rowid) FROM health WHERE rowid > ? AND rowid <= ?"
        " GROUP BY hub_id, CAST(ts / 3600 AS INTEGER))",
        [done, upto, done, upto],
    )
    db.execute(_SET_META, ["downsampled_rowid", str(upto)])
    return int(cur.rowcount)


def _postgresql(db: Database, cutoff: float) -> int:
    done = float(_meta(db, "downsampled_ts") or 0.0)
    if cutoff <= done:
        return 0
    cur = db.execute(
        "DELETE FROM health WHERE ts >= ? AND ts < ? AND (hub_id, seq) NOT IN ("
        " SELECT hub_id, max(seq) FROM health WHERE ts >= ? AND ts < ?"
        " GROUP BY hub_id, floor(ts / 3600))",
        [done, cutoff, done, cutoff],
    )
    db.execute(_SET_META, ["downsampled_ts", repr(cutoff)])
    return int(cur.rowcount)


def downsample(db: Database, full_days: float, now: float | None = None) -> int:
    """Delete what aged past ``full_days`` since the last run, but the hour's last sample;
    returns how many rows were deleted."""
    cutoff = (now if now is not None else time.time()) - full_days * 86_400
    with transaction(db):
        return _sqlite(db, cutoff) if db.engine == "sqlite" else _postgresql(db, cutoff)
