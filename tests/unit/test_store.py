"""Migrations apply once, in order, and the database is in WAL with synchronous=FULL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlite_utils

from hub_agent.store import Migrations, open_db


def test_migrations_apply_once_and_db_is_crash_safe(tmp_path: Path) -> None:
    m = Migrations("demo")
    calls: list[str] = []

    @m
    def m001_create(db: sqlite_utils.Database) -> None:
        calls.append("m001")
        db.table("things").create({"id": int, "name": str}, pk="id")

    @m
    def m002_add_column(db: sqlite_utils.Database) -> None:
        calls.append("m002")
        db.table("things").add_column("size", int)

    path = tmp_path / "hub.db"
    db = open_db(path, m)
    assert calls == ["m001", "m002"]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.conn.close()
    open_db(path, m)
    assert calls == ["m001", "m002"]


def test_failed_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    m = Migrations("broken")

    @m
    def m001_bad(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE half (id INTEGER)")
        raise RuntimeError("boom")

    path = tmp_path / "hub.db"
    with pytest.raises(RuntimeError):
        open_db(path, m)
    db = sqlite_utils.Database(path)
    assert "half" not in db.table_names()
    assert db.table("_migrations").count == 0


def test_database_and_data_folder_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    """Issue 14: with a permissive umask the hub's SQLite was 0644 and its folder 0755."""
    import os

    from hub_agent.store import connect, secure_data_dir

    old = os.umask(0o000)
    try:
        data = tmp_path / "data"
        secure_data_dir(data, traversable=True)
        db = connect(data / "hub.db")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        assert (data.stat().st_mode & 0o777) == 0o751  # enter, never list
        for f in ("hub.db", "hub.db-wal", "hub.db-shm"):
            assert ((data / f).stat().st_mode & 0o777) == 0o600, f
        (data / "hub.db").chmod(0o644)  # an installer's or an old version's mode
        connect(data / "hub.db")
        assert ((data / "hub.db").stat().st_mode & 0o777) == 0o600
        secure_data_dir(tmp_path / "plain", traversable=False)
        assert ((tmp_path / "plain").stat().st_mode & 0o777) == 0o750
    finally:
        os.umask(old)


def test_reopening_a_live_database_keeps_its_locks(tmp_path: Path) -> None:
    """Opening a second connection to a database this process already holds must not
    release the first one's locks (closing any descriptor of a file drops the process's
    POSIX locks on it). Without them another process believes it is the last one using
    the database and, closing, checkpoints and deletes the WAL under the live connection:
    "database disk image is malformed", as after an agent restart and a
    `hub-agent vouchers issue`."""
    import subprocess
    import sys

    from hub_agent.store import connect

    path = tmp_path / "hub.db"
    first = connect(path)
    first.execute("CREATE TABLE t (x)")
    first.execute("INSERT INTO t VALUES (1)")
    connect(path)  # a second connection in this process (the agent opens several)
    other = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "for i in range(100):\n"
        "    c.execute('INSERT INTO t VALUES (?)', (i,))\n"
        "c.close()\n"
    )  # as `hub-agent vouchers issue` writes while the agent runs
    subprocess.run([sys.executable, "-c", other, str(path)], check=True)
    # the other process saw it was not alone: the WAL the live connection uses is still there
    assert (tmp_path / "hub.db-wal").exists()
    assert first.execute("SELECT count(*) FROM t").fetchall() == [(101,)]
    assert first.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
