"""Roaming balances at the centre: one balance per central code across hubs.

Hubs report each central code's cumulative usage on their hub as ``code_usage`` events
(through their outbox; hub_agent/roaming_link.py). ``fold`` keeps one row per
(code, hub) in ``code_usage`` holding the report with the highest event ``seq`` (a re-sent
or late report changes nothing: idempotent, order-free), and ``code_balances`` the code's
total across hubs, in the same transaction as the ingest batch.

``BalanceDesk`` answers hubs' ``relais/hubs/{hub_id}/balances/query`` at login time with a
signed ``balances/answer`` (hub_agent/roaming.py has the payloads): the bytes used on every
other hub, the earliest first use, the hubs and whether the centre issued the code. Each
query is a sighting (``code_sightings``): a code the centre never issued is then a finding
with the hubs that saw it, as is a code whose usage across hubs exceeds what it is worth
(hopping between offline hubs, each granting its bounded offline allowance).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hub_agent.mqtt.core import BrokerUrl
from hub_agent.roaming import Answer, UsedAt, balance_topic, sign_answer
from hub_agent.sessions.quota import plan_limits
from hub_agent.signing import SigningKey
from provisioning.payments.store import unpaid_code
from provisioning.storage import Database, DbUrl, Migrations, transaction

BALANCES = Migrations("balances")
log = logging.getLogger("relais.balances")
QUERY_FILTER = "relais/hubs/+/balances/query"


@BALANCES
def m001_balances(db: Database) -> None:
    db.execute(
        "CREATE TABLE code_usage (code TEXT NOT NULL, hub_id TEXT NOT NULL,"
        " seq BIGINT NOT NULL, bytes BIGINT NOT NULL, first_use DOUBLE PRECISION,"
        " devices BIGINT NOT NULL DEFAULT 0, granted TEXT NOT NULL,"
        " at DOUBLE PRECISION NOT NULL, PRIMARY KEY (code, hub_id))"
    )
    db.execute(
        "CREATE TABLE code_balances (code TEXT PRIMARY KEY, bytes_used BIGINT NOT NULL,"
        " first_use DOUBLE PRECISION, hubs BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
    )
    db.execute(
        "CREATE TABLE code_sightings (code TEXT NOT NULL, hub_id TEXT NOT NULL,"
        " plan_id TEXT NOT NULL, first_at DOUBLE PRECISION NOT NULL,"
        " last_at DOUBLE PRECISION NOT NULL, issued BIGINT NOT NULL,"
        " PRIMARY KEY (code, hub_id))"
    )


# --- folding usage reports ----------------------------------------------------------------
@dataclass(frozen=True)
class Report:
    hub_id: str
    seq: int  # the event's seq: the newest report of a (hub, code) wins
    code: str
    bytes: int
    first_use: float | None
    devices: int
    granted: str
    at: float

    @classmethod
    def from_event(cls, hub_id: str, seq: int, ts: float, msg: dict[str, Any]) -> Report:
        try:
            first = msg.get("first_use")
            return cls(hub_id, int(seq), str(msg["code"]), max(0, int(msg["bytes"])),
                       None if first is None else float(first), int(msg.get("devices") or 0),
                       str(msg.get("granted") or "unasked"), float(ts))  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"code_usage: {e}") from None


def newest(reports: Iterable[Report]) -> list[Report]:
    """Pure: per (hub, code) the report with the highest seq (what ``fold`` keeps)."""
    best: dict[tuple[str, str], Report] = {}
    for r in reports:
        k = (r.hub_id, r.code)
        if k not in best or r.seq > best[k].seq:
            best[k] = r
    return sorted(best.values(), key=lambda r: (r.code, r.hub_id))


def fold(db: Database, reports: Iterable[Report], now: float | None = None) -> int:
    """Record reports (call inside the caller's transaction); returns the codes touched."""
    now = time.time() if now is None else now
    rows = newest(reports)
    if not rows:
        return 0
    db.executemany(
        "INSERT INTO code_usage (code, hub_id, seq, bytes, first_use, devices, granted, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (code, hub_id) DO UPDATE SET"
        " seq = excluded.seq, bytes = excluded.bytes, first_use = excluded.first_use,"
        " devices = excluded.devices, granted = excluded.granted, at = excluded.at"
        " WHERE excluded.seq > code_usage.seq",
        [(r.code, r.hub_id, r.seq, r.bytes, r.first_use, r.devices, r.granted, r.at)
         for r in rows],
    )  # fmt: skip
    codes = sorted({r.code for r in rows})
    for code in codes:
        total = db.execute(
            "SELECT coalesce(sum(bytes), 0), min(first_use), count(*) FROM code_usage"
            " WHERE code = ?",
            [code],
        ).fetchone()
        db.execute(
            "INSERT INTO code_balances (code, bytes_used, first_use, hubs, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET"
            " bytes_used = excluded.bytes_used, first_use = excluded.first_use,"
            " hubs = excluded.hubs, updated_at = excluded.updated_at",
            [code, int(total[0]), total[1], int(total[2]), now],
        )
    for r in rows:  # a report is also a sighting (an offline hub never asked)
        _sighting(db, r.code, r.hub_id, "", r.at)
    return len(codes)


def fold_events(db: Database, events: Iterable[tuple[str, int, float, str, str]]) -> int:
    """The ``code_usage`` events of an ingest batch ((hub, seq, ts, type, json) rows)."""
    reports = []
    for hub_id, seq, ts, kind, data in events:
        if kind != "code_usage":
            continue
        try:
            reports.append(Report.from_event(hub_id, seq, ts, json.loads(data)))
        except ValueError as e:
            log.warning("hub %s: bad code_usage event: %s", hub_id, e)
    return fold(db, reports) if reports else 0


def _issued(db: Database, code: str) -> tuple[str, int] | None:
    row = db.execute(
        "SELECT plan_id, devices_max FROM central_vouchers WHERE code = ?", [code]
    ).fetchone()
    if row is None or unpaid_code(db, code):  # a purchase's code counts once paid (issue 19)
        return None
    return str(row[0]), int(row[1])


def _sighting(db: Database, code: str, hub_id: str, plan_id: str, now: float) -> None:
    issued = 1 if _issued(db, code) is not None else 0
    db.execute(
        "INSERT INTO code_sightings (code, hub_id, plan_id, first_at, last_at, issued)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (code, hub_id) DO UPDATE SET"
        " last_at = excluded.last_at, issued = excluded.issued",
        [code, hub_id, plan_id, now, now, issued],
    )


# --- answering ------------------------------------------------------------------------------
def answer_for(
    db: Database, hub_id: str, request_id: str, code: str, plan_id: str, now: float
) -> Answer:
    """The balance of ``code`` as ``hub_id`` must see it (its own usage left out); records
    the query as a sighting."""
    with transaction(db):
        _sighting(db, code, hub_id, plan_id, now)
    return balance_for(db, hub_id, request_id, code, now)


def balance_for(db: Database, hub_id: str, request_id: str, code: str, now: float) -> Answer:
    """``answer_for`` without recording the sighting: reads only, no commit to wait for."""
    with transaction(db):
        issued = _issued(db, code) is not None
        rows = db.execute(
            "SELECT u.hub_id, coalesce(h.name, u.hub_id), u.bytes, u.first_use FROM code_usage u"
            " LEFT JOIN hubs h ON h.id = u.hub_id WHERE u.code = ? ORDER BY u.hub_id",
            [code],
        ).fetchall()
    firsts = [float(f) for _, _, _, f in rows if f is not None]
    others = [UsedAt(str(h), str(n), int(b)) for h, n, b, _ in rows if h != hub_id]
    return Answer(
        hub_id=hub_id, request_id=request_id, code=code, issued=issued,
        bytes_elsewhere=sum(u.bytes for u in others), first_use=min(firsts) if firsts else None,
        at=now, used_at=tuple(others),
    )  # fmt: skip


class BalanceDesk:
    """Answers balance queries: a subscriber thread fills a queue, one answering thread
    reads the registry (its own connection), signs and publishes. Runs inside
    ``hubctl controller run``; tests and the bench run it alone."""

    def __init__(
        self, db_url: str | DbUrl, url: BrokerUrl, key: SigningKey, client_id: str | None = None
    ) -> None:
        from hub_agent.mqtt.client import Client
        from provisioning.registry import open_registry

        self.db = open_registry(db_url)
        self.key = key
        self.inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        # no Nagle: an answer written right after the query's PUBACK would otherwise wait
        # for the broker's delayed ACK (~40 ms on every roaming login)
        self.client = Client(url, client_id=client_id, nodelay=True,
                             on_message=lambda t, p, _r: self.inbox.put((t, p)))  # fmt: skip
        self.answered = 0
        self._thread = threading.Thread(target=self._run, name="balances", daemon=True)

    def start(self) -> None:
        self.client.connect()
        self.client.subscribe([QUERY_FILTER])
        self._thread.start()

    def stop(self) -> None:
        self.inbox.put(None)
        self._thread.join(5)
        self.client.close()
        self.db.close()

    def _run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            topic, payload = item
            try:
                self.answer(topic, payload)
            except Exception:  # one bad query must not stop the desk
                log.exception("balances: answering %s failed", topic)

    def answer(self, topic: str, payload: bytes) -> None:
        """Answer one query, then record it as a sighting: a login waits on the answer,
        not on the registry's commit (an fsync, tens of ms on a busy disk)."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[:2] != ["relais", "hubs"] or parts[3:] != ["balances", "query"]:
            return  # fmt: skip
        try:
            msg = json.loads(payload)
            request_id, code = str(msg["request_id"]), str(msg["code"])
            plan_id = str(msg.get("plan_id") or "")
        except (ValueError, KeyError, TypeError):
            log.warning("balances: bad query on %s", topic)
            return
        hub_id, now = parts[2], time.time()
        body = sign_answer(self.key, balance_for(self.db, hub_id, request_id, code, now))
        self.client.publish_nowait(
            balance_topic(hub_id, "answer"), json.dumps(body, separators=(",", ":")).encode()
        )
        self.answered += 1
        with transaction(self.db):
            _sighting(self.db, code, hub_id, plan_id, now)


# --- findings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoamingFinding:
    kind: str  # "offline_overspend" | "never_issued" | "unpaid_purchase"
    code: str
    plan_id: str
    worth_bytes: int | None  # what the code is worth (quota x devices), None: not issued
    used_bytes: int
    hubs: tuple[tuple[str, int, str], ...]  # (hub, bytes, granted) per hub that saw it

    @property
    def over_bytes(self) -> int:
        return max(0, self.used_bytes - (self.worth_bytes or 0))


def _worth(plan_id: str, devices_max: int) -> int | None:
    from provisioning.vouchers import catalogue

    plan = catalogue().get(plan_id)
    if plan is None:
        return None
    q = plan_limits(plan).quota_bytes
    return None if q is None else q * devices_max


def roaming_findings(db: Database) -> list[RoamingFinding]:
    """Codes used beyond their worth across hubs (each offline hub bounded by its offline
    allowance, so the overspend is at most hubs x share x quota) and codes seen on hubs
    that the centre never issued."""
    BALANCES.apply(db)
    out: list[RoamingFinding] = []
    seen = db.execute(
        "SELECT s.code, s.hub_id, coalesce(u.bytes, 0), coalesce(u.granted, 'asked')"
        " FROM code_sightings s LEFT JOIN code_usage u ON u.code = s.code AND"
        " u.hub_id = s.hub_id ORDER BY s.code, s.hub_id"
    ).fetchall()
    by_code: dict[str, list[tuple[str, int, str]]] = {}
    for code, hub, b, g in seen:
        by_code.setdefault(str(code), []).append((str(hub), int(b), str(g)))
    for code, hubs in by_code.items():
        used = sum(b for _, b, _ in hubs)
        issued = _issued(db, code)
        if issued is None:
            plan = db.execute(
                "SELECT max(plan_id) FROM code_sightings WHERE code = ?", [code]
            ).fetchone()
            kind = "unpaid_purchase" if unpaid_code(db, code) else "never_issued"
            out.append(RoamingFinding(kind, code, str(plan[0] or ""), None, used, tuple(hubs)))
            continue
        worth = _worth(*issued)
        if worth is not None and used > worth:
            out.append(RoamingFinding("offline_overspend", code, issued[0], worth, used,
                                      tuple(hubs)))  # fmt: skip
    return out


def finding_lines(found: list[RoamingFinding]) -> list[str]:
    """For ``hubctl vouchers findings``: one line per code."""
    from hub_agent.sessions.vouchers import format_code

    lines = []
    for f in found:
        where = ", ".join(f"{h} {b / 1e6:.0f} MB ({g})" for h, b, g in f.hubs)
        if f.worth_bytes is None:  # never_issued, unpaid_purchase
            lines.append(f"{f.kind:17} {format_code(f.code)}  plan {f.plan_id or '?'}: "
                         f"seen on {where}")  # fmt: skip
        else:
            lines.append(
                f"{'offline_overspend':17} {format_code(f.code)}  plan {f.plan_id}: "
                f"{f.used_bytes / 1e6:.0f} MB used of {(f.worth_bytes or 0) / 1e6:.0f} MB, "
                f"{f.over_bytes / 1e6:.0f} MB over, on {where}"
            )
    return lines


def finding_rows(found: list[RoamingFinding]) -> list[dict[str, Any]]:
    from hub_agent.sessions.vouchers import format_code

    return [
        {"kind": f.kind, "code": format_code(f.code), "plan": f.plan_id,
         "worth_bytes": f.worth_bytes, "used_bytes": f.used_bytes, "over_bytes": f.over_bytes,
         "hubs": [{"hub": h, "bytes": b, "granted": g} for h, b, g in f.hubs]}
        for f in found
    ]  # fmt: skip
