"""RADIUS accounting (RFC 2866): records written to SQLite first, then sent until acknowledged.

Same durability idea as the telemetry outbox: a Start, Interim-Update or Stop is a row in
``radius_acct`` committed before anything is sent, and deleted only once a server's
Accounting-Response came back, so an AAA outage, an uplink cut or a kill -9 loses nothing.
Delivery is at least once: a row acknowledged but not yet deleted when the agent dies is
sent again; servers de-duplicate on Acct-Session-Id + Acct-Status-Type + Event-Timestamp,
which never change for a row (only Acct-Delay-Time grows, RFC 2866 5.2).

Per session the rows go out in order (a session's Interim never overtakes its Start);
sessions do not wait for each other. The decisions are pure functions below; ``Journal``
only reads and writes rows. It is synchronous: the agent calls it on its database thread.

Counters: "up" (from the device) is Acct-Input, "down" is Acct-Output (RFC 2866 5.3/5.4:
as seen from the NAS port); each is split into octets and gigawords (RFC 2869 5.1/5.2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import sqlite_utils

from hub_agent.radius.packets import AttrList, Nas, station_mac
from hub_agent.store import Migrations, transaction

RADIUS = Migrations("radius")

Status = Literal["Start", "Interim-Update", "Stop"]

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0

# Hub end reasons -> Acct-Terminate-Cause (RFC 2866 5.10). A quota (time or data) running
# out is Session-Timeout, as hotspot NASes report it; CoA/Disconnect and the caretaker are
# Admin-Reset.
TERMINATE_CAUSE: dict[str, str] = {
    "logout": "User-Request",
    "idle": "Idle-Timeout",
    "time_quota": "Session-Timeout",
    "data_quota": "Session-Timeout",
    "caretaker": "Admin-Reset",
    "blocked": "Admin-Reset",
    "disconnect": "Admin-Reset",
    "lost": "Lost-Service",  # the hub lost the session's state (e.g. a reset kernel)
    "reboot": "NAS-Reboot",
}


@RADIUS
def m001_radius(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE radius_sessions ("
        " session_id TEXT PRIMARY KEY,"
        " username TEXT NOT NULL,"
        " mac TEXT NOT NULL,"
        " ip TEXT,"
        " classes TEXT NOT NULL,"  # JSON list of hex strings (Class is octets)
        " started REAL NOT NULL,"
        " interim_s INTEGER NOT NULL,"
        " last_report REAL NOT NULL,"
        " up_bytes INTEGER NOT NULL DEFAULT 0,"
        " down_bytes INTEGER NOT NULL DEFAULT 0,"
        " ended REAL)"
    )
    db.execute("CREATE INDEX radius_sessions_mac ON radius_sessions(mac)")
    db.execute(
        "CREATE TABLE radius_acct ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " session_id TEXT NOT NULL,"
        " status TEXT NOT NULL,"
        " ts REAL NOT NULL,"
        " attrs TEXT NOT NULL,"  # JSON [[name, value]], all but Acct-Delay-Time
        " tries INTEGER NOT NULL DEFAULT 0,"
        " next_try REAL NOT NULL)"
    )
    db.execute("CREATE INDEX radius_acct_session ON radius_acct(session_id, id)")


@dataclass(frozen=True)
class SessionStart:
    """What an accounting Start needs: take it from ``Accepted`` and the device."""

    session_id: str
    username: str
    mac: str
    ip: str | None
    classes: tuple[bytes, ...] = ()
    interim_s: int = 300


@dataclass(frozen=True)
class Pending:
    id: int
    session_id: str
    status: str
    ts: float
    attrs: AttrList
    tries: int
    next_try: float


def split_octets(n: int) -> tuple[int, int]:
    """(octets, gigawords): the low 32 bits and the number of 2**32 wraps."""
    return n & 0xFFFFFFFF, n >> 32


def record_attrs(
    nas: Nas,
    s: SessionStart,
    status: Status,
    ts: float,
    started: float,
    up_bytes: int = 0,
    down_bytes: int = 0,
    cause: str | None = None,
) -> AttrList:
    """The attributes of one Accounting-Request, except Acct-Delay-Time (added at send)."""
    out: AttrList = [
        ("Acct-Status-Type", status),
        ("Acct-Session-Id", s.session_id),
        ("User-Name", s.username),
        *nas.attrs(),
        ("Calling-Station-Id", station_mac(s.mac)),
        ("Acct-Authentic", "RADIUS"),
        ("Event-Timestamp", int(ts)),
    ]
    if s.ip:
        out.append(("Framed-IP-Address", s.ip))
    out += [("Class", c) for c in s.classes]
    if status != "Start":
        in_oct, in_giga = split_octets(up_bytes)
        out_oct, out_giga = split_octets(down_bytes)
        out += [
            ("Acct-Input-Octets", in_oct),
            ("Acct-Input-Gigawords", in_giga),
            ("Acct-Output-Octets", out_oct),
            ("Acct-Output-Gigawords", out_giga),
            ("Acct-Session-Time", max(0, int(ts - started))),
        ]
    if status == "Stop":
        out.append(("Acct-Terminate-Cause", TERMINATE_CAUSE.get(cause or "", "NAS-Request")))
    return out


def with_delay(attrs: AttrList, ts: float, now: float) -> AttrList:
    """The attributes as sent at ``now``: Acct-Delay-Time is how long the record waited."""
    return [*attrs, ("Acct-Delay-Time", max(0, int(now - ts)))]


def interim_due(last_report: float, interval_s: int, now: float) -> bool:
    return now - last_report >= interval_s


def backoff(tries: int) -> float:
    """Seconds before the next try after ``tries`` failed ones (doubling, capped)."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(0, tries - 1))


def plan_sends(
    rows: Sequence[Pending], now: float, busy: frozenset[str], limit: int
) -> list[Pending]:
    """What to send now: each session's oldest row, if due and the session not in flight."""
    heads: dict[str, Pending] = {}
    for r in sorted(rows, key=lambda r: r.id):
        heads.setdefault(r.session_id, r)
    due = [r for r in heads.values() if r.session_id not in busy and r.next_try <= now]
    return sorted(due, key=lambda r: r.id)[:limit]


def next_wake(rows: Sequence[Pending], now: float) -> float | None:
    """Seconds until the earliest head row is due (0: now); None when nothing is queued."""
    heads: dict[str, Pending] = {}
    for r in sorted(rows, key=lambda r: r.id):
        heads.setdefault(r.session_id, r)
    if not heads:
        return None
    return max(0.0, min(r.next_try for r in heads.values()) - now)


def _dump(attrs: AttrList) -> str:
    return json.dumps([[k, {"hex": v.hex()} if isinstance(v, bytes) else v] for k, v in attrs])


def _load(text: str) -> AttrList:
    out: AttrList = []
    for k, v in json.loads(text):
        out.append((k, bytes.fromhex(v["hex"]) if isinstance(v, dict) else v))
    return out


class Journal:
    """The accounting rows and the live RADIUS sessions, in the hub's SQLite."""

    def __init__(
        self, db: sqlite_utils.Database, nas: Nas, clock: Callable[[], float] = time.time
    ) -> None:
        RADIUS.apply(db)
        self.db = db
        self.nas = nas
        self.clock = clock
        # called after each record is committed (the sender's thread-safe wake-up)
        self.on_record: Callable[[], None] | None = None

    def _record(self, s: SessionStart, status: Status, ts: float, attrs: AttrList) -> None:
        self.db.execute(
            "INSERT INTO radius_acct (session_id, status, ts, attrs, next_try)"
            " VALUES (?, ?, ?, ?, ?)",
            [s.session_id, status, ts, _dump(attrs), ts],
        )

    def _notify(self) -> None:
        if self.on_record is not None:
            self.on_record()

    def start(self, s: SessionStart, now: float | None = None) -> None:
        """The session began: remember it and queue its Start (idempotent per session)."""
        now = self.clock() if now is None else now
        with transaction(self.db):
            if self.session(s.session_id) is not None:
                return
            self.db.execute(
                "INSERT INTO radius_sessions (session_id, username, mac, ip, classes, started,"
                " interim_s, last_report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    s.session_id,
                    s.username,
                    s.mac,
                    s.ip,
                    json.dumps([c.hex() for c in s.classes]),
                    now,
                    s.interim_s,
                    now,
                ],
            )
            self._record(s, "Start", now, record_attrs(self.nas, s, "Start", now, now))
        self._notify()

    def session(self, session_id: str) -> tuple[SessionStart, float, float, float | None] | None:
        """(session, started, last_report, ended) or None."""
        row = self.db.execute(
            "SELECT session_id, username, mac, ip, classes, interim_s, started, last_report,"
            " ended FROM radius_sessions WHERE session_id = ?",
            [session_id],
        ).fetchone()
        if row is None:
            return None
        classes = tuple(bytes.fromhex(h) for h in json.loads(row[4]))
        s = SessionStart(row[0], row[1], row[2], row[3], classes, int(row[5]))
        return s, float(row[6]), float(row[7]), None if row[8] is None else float(row[8])

    def observe(
        self, session_id: str, up_bytes: int, down_bytes: int, now: float | None = None
    ) -> bool:
        """Counters from an accounting pass; queue an Interim-Update when one is due."""
        return self._interim(session_id, up_bytes, down_bytes, now, observed=True)

    def interim(
        self, session_id: str, up_bytes: int, down_bytes: int, now: float | None = None
    ) -> bool:
        """Queue an Interim-Update now, due or not (e.g. after a CoA changed the session)."""
        return self._interim(session_id, up_bytes, down_bytes, now, observed=False)

    def _interim(
        self, session_id: str, up_bytes: int, down_bytes: int, now: float | None, observed: bool
    ) -> bool:
        """An Interim-Update for a session still open. ``observed``: the counters of an
        accounting pass, stored first, and the update queued only when one is due."""
        now = self.clock() if now is None else now
        with transaction(self.db):
            got = self.session(session_id)
            if got is None or got[3] is not None:
                return False
            s, _, last, _ = got
            if observed:
                self.db.execute(
                    "UPDATE radius_sessions SET up_bytes = ?, down_bytes = ? WHERE session_id = ?",
                    [up_bytes, down_bytes, session_id],
                )
                if not interim_due(last, s.interim_s, now):
                    return False
            self._queue(session_id, "Interim-Update", up_bytes, down_bytes, None, now)
        self._notify()
        return True

    def stop(
        self,
        session_id: str,
        up_bytes: int,
        down_bytes: int,
        cause: str,
        now: float | None = None,
    ) -> bool:
        """The session ended (``cause``: a hub end reason, see TERMINATE_CAUSE); once only."""
        now = self.clock() if now is None else now
        with transaction(self.db):
            got = self.session(session_id)
            if got is None or got[3] is not None:
                return False
            self._queue(session_id, "Stop", up_bytes, down_bytes, cause, now)
            self.db.execute(
                "UPDATE radius_sessions SET ended = ? WHERE session_id = ?", [now, session_id]
            )
        self._notify()
        return True

    def _queue(
        self,
        session_id: str,
        status: Status,
        up: int,
        down: int,
        cause: str | None,
        now: float,
    ) -> None:
        got = self.session(session_id)
        assert got is not None
        s, started, _, _ = got
        attrs = record_attrs(self.nas, s, status, now, started, up, down, cause)
        self._record(s, status, now, attrs)
        self.db.execute(
            "UPDATE radius_sessions SET last_report = ?, up_bytes = ?, down_bytes = ?"
            " WHERE session_id = ?",
            [now, up, down, session_id],
        )

    def live(self) -> list[SessionStart]:
        """Sessions started and not stopped (for the CoA lookup and a restart)."""
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT session_id FROM radius_sessions WHERE ended IS NULL ORDER BY started"
            )
        ]
        return [got[0] for i in ids if (got := self.session(i)) is not None]

    def pending(self, limit: int = 1000) -> list[Pending]:
        return [
            Pending(int(r[0]), r[1], r[2], float(r[3]), _load(r[4]), int(r[5]), float(r[6]))
            for r in self.db.execute(
                "SELECT id, session_id, status, ts, attrs, tries, next_try FROM radius_acct"
                " ORDER BY id LIMIT ?",
                [limit],
            )
        ]

    def acked(self, row_id: int) -> None:
        self.db.execute("DELETE FROM radius_acct WHERE id = ?", [row_id])

    def failed(self, row_id: int, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        row = self.db.execute("SELECT tries FROM radius_acct WHERE id = ?", [row_id]).fetchone()
        if row is None:
            return
        tries = int(row[0]) + 1
        self.db.execute(
            "UPDATE radius_acct SET tries = ?, next_try = ? WHERE id = ?",
            [tries, now + backoff(tries), row_id],
        )

    def retry_now(self, now: float | None = None) -> None:
        """A server answered again: rows waiting out a backoff go at once."""
        now = self.clock() if now is None else now
        self.db.execute("UPDATE radius_acct SET next_try = ? WHERE next_try > ?", [now, now])

    def prune(self, before: float) -> int:
        """Forget ended sessions older than ``before`` whose rows were all delivered."""
        cur = self.db.execute(
            "DELETE FROM radius_sessions WHERE ended IS NOT NULL AND ended < ? AND session_id"
            " NOT IN (SELECT session_id FROM radius_acct)",
            [before],
        )
        return int(cur.rowcount)
