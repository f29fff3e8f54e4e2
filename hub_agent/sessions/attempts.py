"""Wrong codes per device (MAC), kept in the hub's SQLite: a brute force stops, a typo never.

The rule (issue 18): a device may mistype; a correct code is accepted whatever came before,
as long as the device is not locked. A device is locked only after ``limit`` wrong codes
within ``window_s`` (50 by default: no person mistypes that often, and 50 guesses per
5 minutes against a 12-character code space with a check character is hopeless), for the
rest of that window. The count is keyed by MAC, so a new DHCP address does not reset it;
it lives in SQLite, so neither a portal nor an agent restart resets it. Only answers about
the code count: an internal error or a busy agent never does.

``verdict`` is pure over the failure times; the store functions are the thin SQL around it.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

# LoginError codes that say the code itself was wrong: only these count
WRONG_CODE = frozenset({"unknown_code", "used_up", "expired", "revoked", "bad_account"})
WARN_BELOW = 3  # "encore N essais" once this few are left


@dataclass(frozen=True)
class Verdict:
    retry_after: int  # > 0: locked, try again in this many seconds
    attempts_left: int  # wrong codes left before the lock


def verdict(failures: list[float], now: float, limit: int, window_s: float) -> Verdict:
    """Whether a device with these failure times may try now."""
    recent = sorted(t for t in failures if t > now - window_s)
    if len(recent) >= limit:
        unlock = recent[-limit] + window_s
        return Verdict(max(1, math.ceil(unlock - now)), 0)
    return Verdict(0, limit - len(recent))


def warn(v: Verdict) -> int | None:
    """Attempts left worth showing (None: plenty left)."""
    return v.attempts_left if v.attempts_left <= WARN_BELOW else None


def failures(conn: sqlite3.Connection, mac: str, since: float) -> list[float]:
    rows = conn.execute(
        "SELECT at FROM login_failures WHERE mac = ? AND at > ?", (mac, since)
    ).fetchall()
    return [float(r[0]) for r in rows]


def standing(
    conn: sqlite3.Connection, mac: str, now: float, limit: int, window_s: float
) -> Verdict:
    """The device's verdict from the failures stored on ``conn``."""
    return verdict(failures(conn, mac, now - window_s), now, limit, window_s)


def record_failure(conn: sqlite3.Connection, mac: str, now: float, window_s: float) -> None:
    conn.execute("INSERT INTO login_failures (mac, at) VALUES (?, ?)", (mac, now))
    # keep the table small: what is out of every window is of no use
    conn.execute("DELETE FROM login_failures WHERE at <= ?", (now - window_s,))


def clear(conn: sqlite3.Connection, mac: str) -> None:
    conn.execute("DELETE FROM login_failures WHERE mac = ?", (mac,))
