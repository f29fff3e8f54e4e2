"""The sessions schema (``Migrations("sessions")``) in the hub's SQLite file.

Usage and the kernel baseline it was folded from live in the same ``sessions`` row and
change in the same transaction, which is what makes a kill -9 at any moment neither lose
nor double-count bytes (see accounting.py).
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from hub_agent.store import Migrations, open_db

SESSIONS = Migrations("sessions")


@SESSIONS
def m001_tables(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE devices (
            mac TEXT PRIMARY KEY,
            ip TEXT,
            hostname TEXT,
            last_seen REAL,
            blocked INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(
        """CREATE TABLE vouchers (
            code TEXT PRIMARY KEY,
            plan_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('local', 'central')),
            devices_max INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'unused'
                CHECK (status IN ('unused', 'active', 'used_up', 'expired', 'revoked')),
            issued_at REAL NOT NULL,
            expires_at REAL,
            first_use REAL
        )"""
    )
    db.execute(
        """CREATE TABLE redemptions (
            code TEXT NOT NULL REFERENCES vouchers(code),
            mac TEXT NOT NULL,
            at REAL NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (code, mac)
        )"""
    )
    db.execute("CREATE INDEX redemptions_unreported ON redemptions(reported) WHERE reported = 0")
    db.execute(
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            mac TEXT NOT NULL,
            plan_id TEXT NOT NULL,
            code TEXT REFERENCES vouchers(code),
            state TEXT NOT NULL CHECK (state IN ('authorised', 'throttled', 'ended')),
            started_at REAL NOT NULL,
            first_use REAL NOT NULL,
            day TEXT NOT NULL,
            bytes_up INTEGER NOT NULL DEFAULT 0,
            bytes_down INTEGER NOT NULL DEFAULT 0,
            granted_used INTEGER NOT NULL DEFAULT 0,
            last_kernel_up INTEGER NOT NULL DEFAULT 0,
            last_kernel_down INTEGER NOT NULL DEFAULT 0,
            last_activity REAL NOT NULL,
            ended_at REAL,
            ended_reason TEXT
        )"""
    )
    # At most one live session per device; the kernel has one state per MAC.
    db.execute("CREATE UNIQUE INDEX sessions_live ON sessions(mac) WHERE state != 'ended'")
    db.execute("CREATE INDEX sessions_mac ON sessions(mac, id)")
    db.execute("CREATE INDEX sessions_code ON sessions(code, mac)")
    db.execute(
        """CREATE TABLE usage_daily (
            mac TEXT NOT NULL,
            day TEXT NOT NULL,
            bytes INTEGER NOT NULL DEFAULT 0,
            free_bytes INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (mac, day)
        )"""
    )


def open_sessions_db(path: Path | str) -> sqlite_utils.Database:
    return open_db(path, SESSIONS)


@SESSIONS
def m002_login_failures(db: sqlite_utils.Database) -> None:
    # wrong codes per device (sessions/attempts.py): a lockout survives restarts
    db.execute("CREATE TABLE login_failures (mac TEXT NOT NULL, at REAL NOT NULL)")
    db.execute("CREATE INDEX login_failures_mac ON login_failures(mac, at)")


@SESSIONS
def m003_session_terms(db: sqlite_utils.Database) -> None:
    # an account (RADIUS) session's own terms, as JSON (sessions/accounts.py); NULL: the
    # session follows its plan_id as before
    db.execute("ALTER TABLE sessions ADD COLUMN terms TEXT")


@SESSIONS
def m004_roaming(db: sqlite_utils.Database) -> None:
    # roaming balances (hub_agent/sessions/roaming.py): what the centre (or the offline
    # allowance) left a central code on this hub, and what was reported of its usage
    db.execute(
        """CREATE TABLE roaming (
            code TEXT PRIMARY KEY,
            source TEXT NOT NULL CHECK (source IN ('centre', 'offline')),
            issued INTEGER,
            bytes_elsewhere INTEGER NOT NULL DEFAULT 0,
            cap_bytes INTEGER,
            used_at TEXT NOT NULL DEFAULT '[]',
            decided_at REAL NOT NULL
        )"""
    )
    db.execute(
        "CREATE TABLE roaming_reports (code TEXT PRIMARY KEY, bytes INTEGER NOT NULL, "
        "at REAL NOT NULL)"
    )
