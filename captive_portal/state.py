"""The portal's own small state: caretaker sessions and admin-login failures, in SQLite.

Kept beside the portal's form-signing secret (``--secret-file``; systemd's
``StateDirectory``), so a portal restart neither logs the caretaker out nor forgets a
password-guessing lockout. Session ids are stored hashed (a copy of the file opens no
session). WAL with ``synchronous=NORMAL``: a commit is a write to the WAL, no fsync, so
these calls cost microseconds in a request (a power cut may forget the last session opened,
which only means logging in again). Without a file (tests, the lab) it is in memory.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from captive_portal.ratelimit import Lockout


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class PortalState:
    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # never umask-dependent
            os.close(fd)
        self.conn = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self.lock = threading.Lock()
        with self.lock:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS admin_sessions (sid TEXT PRIMARY KEY, expires REAL)"
            )
            self.conn.execute("CREATE TABLE IF NOT EXISTS failures (key TEXT, at REAL)")

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()


class AdminSessions:
    """Caretaker sessions: revocable at logout, kept across portal restarts."""

    def __init__(self, state: PortalState, ttl_s: int = 8 * 3600, max_sessions: int = 32):
        self.state = state
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions

    def open(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        st = self.state
        st._run("DELETE FROM admin_sessions WHERE expires <= ?", (now,))
        (n,) = st._run("SELECT count(*) FROM admin_sessions")[0]
        if isinstance(n, int) and n >= self.max_sessions:
            st._run(
                "DELETE FROM admin_sessions WHERE sid = "
                "(SELECT sid FROM admin_sessions ORDER BY expires LIMIT 1)"
            )
        sid = secrets.token_urlsafe(32)
        st._run("INSERT INTO admin_sessions VALUES (?, ?)", (_hash(sid), now + self.ttl_s))
        return sid

    def valid(self, sid: str | None, now: float | None = None) -> bool:
        if not sid:
            return False
        now = time.time() if now is None else now
        rows = self.state._run("SELECT expires FROM admin_sessions WHERE sid = ?", (_hash(sid),))
        return bool(rows) and float(rows[0][0]) > now  # type: ignore[arg-type]

    def close(self, sid: str | None) -> None:
        if sid:
            self.state._run("DELETE FROM admin_sessions WHERE sid = ?", (_hash(sid),))


class StoredLockout(Lockout):
    """``Lockout`` whose failures are written through to the portal's state (by wall time,
    so they mean the same after a restart)."""

    def __init__(
        self, state: PortalState, limit: int, window_s: float, clock: Callable[[], float]
    ) -> None:
        super().__init__(limit, window_s, clock)
        self.state = state
        since = self.clock() - window_s
        rows = state._run("SELECT key, at FROM failures WHERE at > ? ORDER BY at", (since,))
        for key, at in rows:
            self._failures.setdefault(str(key), deque()).append(float(at))  # type: ignore[arg-type]

    def fail(self, key: str) -> None:
        super().fail(key)
        now = self.clock()
        self.state._run("DELETE FROM failures WHERE at <= ?", (now - self.window_s,))
        self.state._run("INSERT INTO failures VALUES (?, ?)", (key, now))

    def succeed(self, key: str) -> None:
        super().succeed(key)
        self.state._run("DELETE FROM failures WHERE key = ?", (key,))
