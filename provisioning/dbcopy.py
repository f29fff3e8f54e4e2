"""``hubctl db migrate`` and ``hubctl db copy SRC_URL DST_URL``.

``migrate`` creates or upgrades the registry at ``--db`` (every feature's registered
migrations, ``registry.MIGRATION_SETS``) and lists what it applied.

``copy`` moves a pilot's registry (typically SQLite) to another database (typically a
fresh PostgreSQL): both are migrated to the same schema first, the target must hold no
rows yet, every table is copied in one transaction in batches, then verified row for row:
per table, the row count and an order-independent digest of every row's values (the sum
of a hash per row) must be equal on both sides. Any difference fails the command (exit 1)
and names the table.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from provisioning import registry
from provisioning.storage import Database, connect, transaction

SKIP = {"_migrations", "sqlite_sequence", "sqlite_stat1"}  # bookkeeping, not data
BATCH = 2000


@dataclass(frozen=True)
class TableCheck:
    table: str
    rows: int
    digest: int


def _columns(db: Database, table: str) -> list[str]:
    cur: Any = db.execute(f"SELECT * FROM {table} LIMIT 0")  # names from our own schema
    return [d[0] for d in cur.description]


def _rows(db: Database, table: str, cols: list[str]) -> Iterator[tuple[Any, ...]]:
    """Stream a table without holding it in memory (a server-side cursor on PostgreSQL)."""
    sql = f"SELECT {', '.join(cols)} FROM {table}"
    if db.engine == "postgresql":
        with db.conn.transaction(), db.conn.cursor(name=f"copy_{table}") as cur:
            cur.itersize = BATCH
            cur.execute(sql)
            yield from cur
        return
    yield from db.conn.execute(sql)


def _norm(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)  # SQLite keeps 100 in a REAL column as an integer; same value
    return v


def check(db: Database, table: str, cols: list[str]) -> TableCheck:
    total, n = 0, 0
    for row in _rows(db, table, cols):
        h = hashlib.blake2b(repr(tuple(_norm(v) for v in row)).encode(), digest_size=8)
        total = (total + int.from_bytes(h.digest(), "big")) % (1 << 64)
        n += 1
    return TableCheck(table, n, total)


def data_tables(db: Database) -> list[str]:
    return [t for t in db.table_names() if t not in SKIP]


def copy(src: Database, dst: Database) -> list[TableCheck]:
    """Copy every data table of ``src`` into ``dst`` (one transaction) and verify it;
    raises ValueError naming the first problem."""
    tables = data_tables(src)
    missing = sorted(set(tables) - set(data_tables(dst)))
    if missing:
        raise ValueError(f"target lacks table(s) {', '.join(missing)}: migrate it first")
    for t in tables:
        if dst.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone():
            raise ValueError(f"target table {t} is not empty: copy goes into a fresh database")
    with transaction(dst):
        if dst.engine == "postgresql":
            dst.execute("SET CONSTRAINTS ALL DEFERRED")
        for t in tables:
            cols = _columns(src, t)
            sql = f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            batch: list[tuple[Any, ...]] = []
            for row in _rows(src, t, cols):
                batch.append(tuple(row))
                if len(batch) >= BATCH:
                    dst.executemany(sql, batch)
                    batch = []
            if batch:
                dst.executemany(sql, batch)
    out = []
    for t in tables:
        cols = _columns(src, t)
        a, b = check(src, t, cols), check(dst, t, cols)
        if a != b:
            raise ValueError(
                f"table {t}: {a.rows} rows in the source, {b.rows} in the target"
                + (", values differ" if a.rows == b.rows else "")
            )
        out.append(a)
    return out


def migrate_command(url: str) -> int:
    """Create or upgrade the registry; print each step applied now (none: up to date)."""
    db = connect(url)
    try:
        applied = [(m.owner, name) for m in registry.migration_sets() for name in m.apply(db)]
    finally:
        db.close()
    for owner, name in applied:
        print(f"applied {owner}: {name}")
    print(f"{db.url}: schema up to date ({db.engine}, {len(applied)} step(s) applied now)")
    return 0


def copy_command(src_url: str, dst_url: str) -> int:
    try:
        src, dst = registry.open_registry(src_url), registry.open_registry(dst_url)
    except ValueError as e:
        print(f"hubctl db copy: {e}", file=sys.stderr)
        return 2
    try:
        checks = copy(src, dst)
    except ValueError as e:
        print(f"hubctl db copy: {e}", file=sys.stderr)
        return 1
    finally:
        src.close()
        dst.close()
    for c in checks:
        print(f"{c.table:24} {c.rows:>10} rows  verified")
    print(f"copied {sum(c.rows for c in checks)} rows from {src.url} to {dst.url}")
    return 0
