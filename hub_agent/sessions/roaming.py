"""The hub's store of roaming balances (table ``roaming``, migration m004): the cap a
central code's device slots get on this hub, and its usage reports to the centre.

Called inside ``SessionService``'s transactions (``login``, ``_limits_of``) and by the
roaming link on the agent's worker thread; the decisions are ``hub_agent.roaming``'s.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace

from hub_agent.roaming import Asked, Decision, Known, UsedAt, capped, decide
from hub_agent.sessions.quota import Limits


def known(conn: sqlite3.Connection, code: str) -> Known | None:
    row = conn.execute(
        "SELECT source, issued, bytes_elsewhere, cap_bytes FROM roaming WHERE code = ?", (code,)
    ).fetchone()
    if row is None:
        return None
    return Known(row[0], None if row[1] is None else bool(row[1]), int(row[2]), row[3])


def decide_here(conn: sqlite3.Connection, asked: Asked, now: float) -> Decision:
    """Decide with what this hub stored for the code, and store the decision (an earlier
    centre answer is kept as is when no new one came)."""
    k = known(conn, asked.code)
    d = decide(asked.code, asked.quota_bytes, asked.answer, k, asked.share_pct)
    if asked.answer is not None or k is None or k.source != "centre":
        record(conn, d, now)
    return d


def record(conn: sqlite3.Connection, d: Decision, now: float) -> None:
    """Store the decision (replacing an earlier one)."""
    used_at = json.dumps([[u.hub, u.name, u.bytes] for u in d.used_at])
    issued = None if d.issued is None else int(d.issued)
    conn.execute(
        "INSERT INTO roaming (code, source, issued, bytes_elsewhere, cap_bytes, used_at, "
        "decided_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(code) DO UPDATE SET "
        "source = excluded.source, issued = excluded.issued, "
        "bytes_elsewhere = excluded.bytes_elsewhere, cap_bytes = excluded.cap_bytes, "
        "used_at = excluded.used_at, decided_at = excluded.decided_at",
        (d.code, d.source, issued, d.bytes_elsewhere, d.cap_bytes, used_at, now),
    )
    earlier_first_use(conn, d)


def earlier_first_use(conn: sqlite3.Connection, d: Decision) -> bool:
    """Move the voucher's first use to the earliest the centre knows (the time quota runs
    from it); True when it moved."""
    if d.first_use is None:
        return False
    cur = conn.execute(
        "UPDATE vouchers SET first_use = ? WHERE code = ? AND first_use > ?",
        (d.first_use, d.code, d.first_use),
    )
    return cur.rowcount > 0


def limits_for(conn: sqlite3.Connection, code: str | None, limits: Limits | None) -> Limits | None:
    """The plan's limits with the code's roaming cap applied."""
    if code is None or limits is None or limits.quota_bytes is None:
        return limits
    row = conn.execute("SELECT cap_bytes FROM roaming WHERE code = ?", (code,)).fetchone()
    if row is None or row[0] is None:
        return limits
    return replace(limits, quota_bytes=capped(limits.quota_bytes, int(row[0])))


@dataclass(frozen=True)
class Where:
    """For the status page: the code's usage elsewhere, as last known."""

    source: str
    bytes_elsewhere: int
    used_at: tuple[UsedAt, ...]


def where(conn: sqlite3.Connection, code: str | None) -> Where | None:
    if code is None:
        return None
    row = conn.execute(
        "SELECT source, bytes_elsewhere, used_at FROM roaming WHERE code = ?", (code,)
    ).fetchone()
    if row is None:
        return None
    used = tuple(UsedAt(str(h), str(n), int(b)) for h, n, b in json.loads(row[2]))
    return Where(str(row[0]), int(row[1]), used)


@dataclass(frozen=True)
class Usage:
    """This hub's cumulative usage of a central code (a ``code_usage`` event)."""

    code: str
    bytes: int
    first_use: float | None
    devices: int
    granted: str  # "centre" | "offline" | "unasked"

    def as_event(self) -> dict[str, object]:
        return {"type": "code_usage", "code": self.code, "bytes": self.bytes,
                "first_use": self.first_use, "devices": self.devices,
                "granted": self.granted}  # fmt: skip


def pending_usage(conn: sqlite3.Connection) -> list[Usage]:
    """Central codes whose usage here changed since the last report."""
    rows = conn.execute(
        "SELECT s.code, sum(s.bytes_up + s.bytes_down), min(v.first_use), "
        "count(DISTINCT s.mac), coalesce(r.source, 'unasked') FROM sessions s "
        "JOIN vouchers v ON v.code = s.code AND v.kind = 'central' "
        "LEFT JOIN roaming r ON r.code = s.code "
        "LEFT JOIN roaming_reports p ON p.code = s.code "
        "GROUP BY s.code HAVING p.bytes IS NULL OR sum(s.bytes_up + s.bytes_down) > max(p.bytes)"
    ).fetchall()
    return [Usage(str(c), int(b), None if f is None else float(f), int(d), str(g))
            for c, b, f, d, g in rows]  # fmt: skip


def mark_reported(conn: sqlite3.Connection, usage: list[Usage], now: float) -> None:
    conn.executemany(
        "INSERT INTO roaming_reports (code, bytes, at) VALUES (?, ?, ?) ON CONFLICT(code) "
        "DO UPDATE SET bytes = max(bytes, excluded.bytes), at = excluded.at",
        [(u.code, u.bytes, now) for u in usage],
    )


def offline_codes(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(code, plan_id) of codes granted offline that still have a live session here:
    to ask the centre again once it is reachable."""
    rows = conn.execute(
        "SELECT DISTINCT r.code, v.plan_id FROM roaming r JOIN vouchers v ON v.code = r.code "
        "JOIN sessions s ON s.code = r.code AND s.state != 'ended' WHERE r.source = 'offline'"
    ).fetchall()
    return [(str(c), str(p)) for c, p in rows]
