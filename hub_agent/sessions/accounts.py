"""Account (RADIUS) sessions: their own terms instead of a plan's, and the accounting journal
kept in step with the sessions table.

An account session is a ``sessions`` row like any other, so the kernel quota and shaping,
the idle and time ends, logout, the caretaker and kill -9 all work as for a voucher. What
differs: its row carries ``terms``, the JSON of ``Terms`` (what the Access-Accept said, or
a later CoA), and the service reads its limits and rates from there, not from ``plan_id``
(which says ``account``, or the hub plan the Accept named, for the status page).

Accounting follows the table rather than every place a session can end: ``sync`` (run on
the agent's worker after each accounting pass, and inside an account login's transaction)
compares the account rows with the RADIUS journal and queues what is missing: a Start for
a row the journal does not know, an Interim when due for a live one, a Stop with the row's
end reason for an ended one. A crash anywhere in between is repaired by the next sync.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from hub_agent.radius.accounting import Journal, SessionStart
from hub_agent.radius.params import Change
from hub_agent.sessions.quota import Limits

if TYPE_CHECKING:
    from hub_agent.radius.client import Accepted
    from hub_agent.radius.coa import Target

ACCOUNT = "account"  # the login method, and plan_id when the Accept named no hub plan
RECENT_S = 24 * 3600  # an ended row whose Start never went out is still reported this long


@dataclass(frozen=True)
class Terms:
    """What one account session may use: the Accept's attributes with the config's defaults."""

    session_id: str  # Acct-Session-Id
    username: str
    down_kbit: int
    up_kbit: int
    quota_bytes: int | None  # counted bytes for the session; None: unlimited
    time_limit_s: int | None  # Session-Timeout, from login; None: unlimited
    idle_timeout_s: int
    interim_s: int
    plan_id: str | None = None  # the hub plan named in Filter-Id/Class
    classes: tuple[str, ...] = ()  # Class values (hex), echoed in accounting

    def dump(self) -> str:
        return json.dumps({**vars(self), "classes": list(self.classes)}, sort_keys=True)

    @classmethod
    def load(cls, text: str) -> Terms:
        data = json.loads(text)
        return cls(**{**data, "classes": tuple(data.get("classes", ()))})

    def limits(self) -> Limits:
        return Limits(self.quota_bytes, self.time_limit_s, self.idle_timeout_s)

    def changed(self, c: Change) -> Terms:
        """The terms after a CoA-Request (its None fields leave ours as they are)."""
        new = {k: v for k, v in vars(c).items() if v is not None}
        return replace(self, **new)

    def start(self, mac: str, ip: str | None) -> SessionStart:
        classes = tuple(bytes.fromhex(h) for h in self.classes)
        return SessionStart(self.session_id, self.username, mac, ip, classes, self.interim_s)

    def name(self) -> dict[str, str]:
        return {"fr": f"Compte {self.username}", "en": f"Account {self.username}"}


def terms_from(accepted: Accepted) -> Terms:
    p = accepted.params
    return Terms(
        session_id=accepted.session_id,
        username=accepted.username,
        down_kbit=p.down_kbit,
        up_kbit=p.up_kbit,
        quota_bytes=p.quota_bytes,
        time_limit_s=p.time_limit_s,
        idle_timeout_s=p.idle_timeout_s,
        interim_s=p.interim_interval_s,
        plan_id=p.plan_id,
        classes=tuple(c.hex() for c in accepted.classes),
    )


# --- the journal in step with the sessions table (sync) -----------------------------------
@dataclass(frozen=True)
class Tracked:
    """An account row as the sync sees it, with what the journal knows of it."""

    mac: str
    ip: str | None
    terms: Terms
    live: bool
    started_at: float
    up_bytes: int
    down_bytes: int
    ended_reason: str | None
    journaled: bool  # the journal has its session (its Start is queued or sent)
    stopped: bool  # and its Stop


Op = tuple[Literal["start", "observe", "stop"], Tracked]


def plan_sync(rows: Iterable[Tracked]) -> list[Op]:
    """What the journal must record so that it says what the sessions table says."""
    ops: list[Op] = []
    for r in rows:
        if r.stopped:
            continue
        if not r.journaled:
            ops.append(("start", r))
        ops.append(("observe" if r.live else "stop", r))
    return ops


_TRACKED = (
    "SELECT s.mac, d.ip, s.terms, s.state != 'ended', s.started_at, s.bytes_up, s.bytes_down,"
    " s.ended_reason, r.session_id IS NOT NULL, r.ended IS NOT NULL"
    " FROM sessions s"
    " LEFT JOIN radius_sessions r ON r.session_id = json_extract(s.terms, '$.session_id')"
    " LEFT JOIN devices d ON d.mac = s.mac"
    " WHERE s.terms IS NOT NULL AND (s.state != 'ended'"
    "  OR (r.session_id IS NOT NULL AND r.ended IS NULL)"
    "  OR (r.session_id IS NULL AND s.ended_at > ?))"
)


def tracked(conn: sqlite3.Connection, now: float) -> list[Tracked]:
    rows = conn.execute(_TRACKED, (now - RECENT_S,)).fetchall()
    return [
        Tracked(
            str(m), ip, Terms.load(t), bool(lv), float(st), int(u), int(d), er, bool(j), bool(e)
        )
        for m, ip, t, lv, st, u, d, er, j, e in rows
    ]


def sync(journal: Journal, conn: sqlite3.Connection, now: float) -> int:
    """Queue the Starts, Interims and Stops the sessions table calls for; how many ops."""
    ops = plan_sync(tracked(conn, now))
    for kind, r in ops:
        sid = r.terms.session_id
        if kind == "start":
            journal.start(r.terms.start(r.mac, r.ip), now=r.started_at)
        elif kind == "observe":
            journal.observe(sid, r.up_bytes, r.down_bytes, now=now)
        else:
            journal.stop(sid, r.up_bytes, r.down_bytes, r.ended_reason or "lost", now=now)
    return len(ops)


# --- Dynamic Authorization (CoA/Disconnect) ------------------------------------------------
def matches(target: Target, mac: str, ip: str | None, terms: Terms) -> bool:
    """Every field the request named must match (RFC 5176 3: identification)."""
    return (
        target.session_id in (None, terms.session_id)
        and target.username in (None, terms.username)
        and target.mac in (None, mac)
        and target.ip in (None, ip)
    )


def live_matching(conn: sqlite3.Connection, target: Target) -> list[tuple[str, Terms]]:
    """(mac, terms) of the live account sessions a Disconnect/CoA-Request names."""
    rows = conn.execute(
        "SELECT s.mac, d.ip, s.terms FROM sessions s LEFT JOIN devices d ON d.mac = s.mac"
        " WHERE s.terms IS NOT NULL AND s.state != 'ended'"
    ).fetchall()
    out = []
    for mac, ip, text in rows:
        terms = Terms.load(text)
        if matches(target, str(mac), ip, terms):
            out.append((str(mac), terms))
    return out


def set_terms(conn: sqlite3.Connection, mac: str, terms: Terms) -> None:
    """New terms for a live account session: the quota left is counted from now on."""
    conn.execute(
        "UPDATE sessions SET terms = ?, granted_used = bytes_up + bytes_down"
        " WHERE mac = ? AND state != 'ended' AND terms IS NOT NULL",
        (terms.dump(), mac),
    )


def counts(conn: sqlite3.Connection, macs: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Counted (up, down) bytes of these devices' live sessions."""
    out: dict[str, tuple[int, int]] = {}
    for mac in macs:
        row = conn.execute(
            "SELECT bytes_up, bytes_down FROM sessions WHERE mac = ? AND state != 'ended'",
            (mac,),
        ).fetchone()
        if row is not None:
            out[mac] = (int(row[0]), int(row[1]))
    return out
