"""The hub's SQLite database: WAL, synchronous=FULL, and registered migrations.

Power cuts kill hubs without warning, so every commit must be on disk when it returns:
WAL with ``synchronous=FULL`` gives that at a low cost. Each feature registers its schema
as numbered migrations under its own name (``hub_agent.migrations``, shared with the
centre's storage); ``open_db`` applies those not yet applied, each in one transaction,
recording them in ``_migrations``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from hub_agent import migrations


class Migrations(migrations.Migrations[sqlite_utils.Database]):
    """An ordered list of schema steps owned by one feature (e.g. "sessions", "outbox")."""

    def step_transaction(
        self, db: sqlite_utils.Database
    ) -> contextlib.AbstractContextManager[object]:
        return transaction(db)  # BEGIN IMMEDIATE: SQLite's write lock serialises steps


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

    Connections are in autocommit mode (so sqlite-utils' single statements commit at once);
    anything that must change several rows together goes through here.
    """
    conn = db.conn
    if conn.in_transaction:  # nested: the outer transaction decides
        yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


DB_MODE = 0o600  # SQLite makes its -wal and -shm files with the database's own mode


def private_file(path: Path, mode: int = DB_MODE) -> None:
    """Create ``path`` if missing, and make its mode ``mode`` whatever the umask was.

    An existing file is never opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, so an open-and-close beside a live SQLite
    connection would silently release that connection's locks (and let another process
    write the database under it: "database disk image is malformed")."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode))  # no locks yet
        st = os.stat(path)
    if st.st_mode & 0o777 != mode:
        os.chmod(path, mode)


def connect(path: Path | str) -> sqlite_utils.Database:
    """Open (creating the folder) a database tuned for crash safety on a small box.
    The file is 0600 whatever the process's umask (a unit's UMask= is not the only guard)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        private_file(Path(path))
    return sqlite_utils.Database(sqlite_connection(str(path)))


BUSY_TIMEOUT_MS = 5000  # how long a statement waits for another connection's write lock


def sqlite_connection(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode with the settings every Relais database uses, at the
    hub and at the centre: WAL, synchronous=FULL, foreign keys, a 5 s busy timeout."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def open_db(path: Path | str, *migrations: Migrations) -> sqlite_utils.Database:
    db = connect(path)
    for m in migrations:
        m.apply(db)
    return db


class Locked:
    """A database shared by threads of one process: one writer at a time."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.lock = threading.RLock()


def secure_data_dir(path: Path, traversable: bool) -> None:
    """The agent's data folder: 0750, or 0751 when another user must reach files inside it
    (nginx's workers serve content/ files published 0644; "x" lets them enter, never
    list). Never group/other writable, whatever the umask or an installer left."""
    path.mkdir(parents=True, exist_ok=True)
    mode = 0o751 if traversable else 0o750
    if path.stat().st_mode & 0o777 != mode:
        os.chmod(path, mode)
