"""The centre's storage: one registry on SQLite (the default) or PostgreSQL, chosen by URL.

``open_database(url)`` takes ``sqlite:////abs/path`` (or a plain path, or ``:memory:``) or
``postgresql://user@host/db`` and returns a ``Database``: a thin wrapper over the engine's
own DB-API driver (the standard ``sqlite3`` module; psycopg 3 for PostgreSQL) with the
handful of calls the centre uses: ``execute``, ``executemany``, ``query`` (rows as dicts),
``table_names`` and ``transaction``.

One SQL for both engines. Statements are written once, in the portable subset both engines
run as is: ``?`` placeholders (turned into psycopg's ``%s`` here, the only translation),
``INSERT ... ON CONFLICT (...) DO NOTHING | DO UPDATE SET col = excluded.col``,
``UPDATE ... FROM (SELECT ...)``, window functions; column types TEXT, BIGINT and
DOUBLE PRECISION (SQLite reads them as INTEGER and REAL affinity; never write ``REAL``,
which is a 4-byte float on PostgreSQL). Nothing here rewrites SQL per dialect.

Schema changes are registered ``Migrations`` (one list per feature, recorded in the
``_migrations`` table as ``(owner, name)``, the same table and names ``hub_agent.store``
used, so an existing SQLite registry upgrades in place). ``provisioning.registry`` lists the
centre's sets in ``MIGRATION_SETS``; ``hubctl db migrate`` applies them all.

Adopting this layer for another feature (e.g. the mobile-money ``payments`` table)::

    from provisioning.storage import Database, Migrations, transaction

    PAYMENTS = Migrations("payments")

    @PAYMENTS
    def m001_payments(db: Database) -> None:
        db.execute(
            "CREATE TABLE payments (ref TEXT PRIMARY KEY, hub_id TEXT NOT NULL,"
            " amount BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, state TEXT NOT NULL)"
        )

    def record(db: Database, ref: str, ...) -> None:
        with transaction(db):
            db.execute("INSERT INTO payments (...) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT (ref) DO NOTHING", [...])

then add ``"provisioning.payments.store:PAYMENTS"`` to ``registry.MIGRATION_SETS`` so
``open_registry``, ``hubctl db migrate`` and ``hubctl db copy`` know the table. Functions
typed ``sqlite_utils.Database`` that only call ``execute``/``query`` work unchanged at
run time; ``db.table(...)`` helpers of sqlite-utils do not exist here.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg

from hub_agent import migrations
from hub_agent.store import BUSY_TIMEOUT_MS, sqlite_connection

Engine = Literal["sqlite", "postgresql"]
Params = Sequence[Any] | None

# Errors of either driver, for code that must survive a failed commit (the controller).
ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


class StorageError(ValueError):
    """A bad database URL (the message says what is accepted)."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class DbUrl:
    engine: Engine
    target: str  # a file path / ":memory:" (sqlite) or the libpq URL (postgresql)

    @classmethod
    def parse(cls, url: str | Path) -> DbUrl:
        text = str(url)
        if text.startswith(("postgresql://", "postgres://")):
            return cls("postgresql", text)
        if text.startswith("sqlite:///"):
            return cls("sqlite", text[len("sqlite://") :])
        if text.startswith("sqlite://"):
            raise StorageError(f"{text!r}: write sqlite:////absolute/path (three slashes + path)")
        if "://" in text:
            raise StorageError(
                f"unsupported database URL scheme {text.split('://')[0]!r} "
                "(sqlite:///path or postgresql://...)"
            )
        return cls("sqlite", text)

    def __str__(self) -> str:
        if self.engine == "sqlite":
            return f"sqlite://{self.target}" if self.target.startswith("/") else self.target
        return _redact(self.target)


def _redact(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"


@functools.lru_cache(maxsize=512)
def to_format_style(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (``%`` doubled), outside quoted text."""
    out = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        if ch == "%":
            out.append("%%")
            continue
        out.append(ch)
    return "".join(out)


class Database:
    """One connection to the centre's registry, in autocommit mode: a single statement
    commits at once; several that belong together go through ``transaction``."""

    def __init__(self, url: DbUrl, conn: Any) -> None:
        self.url = url
        self.engine: Engine = url.engine
        self.conn = conn  # the driver's own connection (sqlite3 or psycopg)
        self.lock_waits = 0  # SQLite: times BEGIN found another writer (several controllers)

    # --- statements ----------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.engine == "sqlite" else to_format_style(sql)

    def execute(self, sql: str, params: Params = None) -> Cursor:
        cur: Cursor = self.conn.execute(self._sql(sql), tuple(params or ()))
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement over many rows; psycopg pipelines them (one round trip per batch)."""
        if self.engine == "sqlite":
            self.conn.executemany(sql, rows)
            return
        with self.conn.cursor() as cur:
            cur.executemany(self._sql(sql), list(rows))

    def query(self, sql: str, params: Params = None) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(self._sql(sql), tuple(params or ()))
        names = [d[0] for d in cur.description or ()]
        for row in cur.fetchall():
            yield dict(zip(names, row, strict=True))

    def table_names(self) -> list[str]:
        if self.engine == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        else:
            sql = (
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY table_name"
            )
        return [str(r[0]) for r in self.execute(sql).fetchall()]

    # --- transactions --------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        if self.engine == "sqlite":
            return bool(self.conn.in_transaction)
        return bool(self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    def begin(self) -> None:
        """BEGIN; on SQLite ``BEGIN IMMEDIATE`` (take the write lock now), retried at a fine
        grain while another process holds it rather than in SQLite's busy handler, whose
        sleeps grow to 100 ms. PostgreSQL writers only wait on the rows they share."""
        if self.engine == "postgresql":
            self.conn.execute("BEGIN")
            return
        self.conn.execute("PRAGMA busy_timeout=0")
        try:
            for attempt in range(20_000):
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    self.lock_waits += 1
                    time.sleep(0.0005 if attempt < 1000 else 0.01)
            raise sqlite3.OperationalError("database is locked")
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def broken(self) -> bool:
        """True once the server closed the connection (PostgreSQL restarted): reconnect."""
        return bool(self.engine == "postgresql" and self.conn.closed)

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def transaction(db: Database) -> Iterator[Database]:
    """BEGIN ... COMMIT, or ROLLBACK on any exception; nested: the outer one decides."""
    if db.in_transaction:
        yield db
        return
    db.begin()
    try:
        yield db
    except BaseException:
        with contextlib.suppress(*ERRORS):
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def connect(url: str | Path | DbUrl) -> Database:
    """Open (for SQLite creating the folder) without applying migrations."""
    u = url if isinstance(url, DbUrl) else DbUrl.parse(url)
    if u.engine == "postgresql":
        return Database(u, psycopg.connect(u.target, autocommit=True))
    if u.target != ":memory:":
        Path(u.target).parent.mkdir(parents=True, exist_ok=True)
    return Database(u, sqlite_connection(u.target))


# --- migrations (the registry shared with the hub: hub_agent.migrations) ----------------
class Migrations(migrations.Migrations[Database]):
    """An ordered list of schema steps owned by one feature ("registry", "payments"...)."""

    @contextlib.contextmanager
    def step_transaction(self, db: Database) -> Iterator[Database]:
        """SQLite's write lock, or a PostgreSQL transaction-scoped advisory lock: several
        controllers starting at once apply each step once."""
        with transaction(db):
            if db.engine == "postgresql":
                db.execute("SELECT pg_advisory_xact_lock(hashtext('relais-migrations'))")
            yield db


def open_database(url: str | Path | DbUrl, *migrations: Migrations) -> Database:
    db = connect(url)
    try:
        for m in migrations:
            m.apply(db)
    except BaseException:
        db.close()
        raise
    return db
