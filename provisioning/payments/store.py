"""The central payments table: one row per purchase, written before any provider call.

Lives in the registry database (its own registered migration ``payments``, through
``provisioning.storage``), in plain SQL that SQLite and PostgreSQL both run as written:
TEXT/INTEGER/BIGINT/DOUBLE PRECISION, UNIQUE constraints, ``INSERT ... ON CONFLICT DO
NOTHING`` and compare-and-set ``UPDATE ... WHERE state = ?``. Every state change goes
through ``transition``: it happens only if the row is still in the state the caller saw,
so two deciders (a callback and the poller, two controller processes, a restarted one)
cannot both move a payment, and a grant is made once. ``payment_log`` keeps each change
for the accountants and for ``hubctl payments show``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from provisioning.payments.machine import Event, State, next_state
from provisioning.storage import Database, Migrations, transaction

MIGRATIONS = Migrations("payments")

COLUMNS = (
    "ref", "hub_id", "request_id", "plan_id", "amount", "currency", "phone", "network",
    "provider", "device", "code", "state", "reason", "provider_ref", "payment_reference",
    "paid_amount", "created_at", "updated_at", "next_check_at", "checks", "start_attempts",
    "paid_at", "grant_json", "granted_at", "acked_at",
)  # fmt: skip


@MIGRATIONS
def m001_payments(db: Database) -> None:
    db.execute(
        """CREATE TABLE payments (
            ref TEXT PRIMARY KEY,
            hub_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            plan_id TEXT NOT NULL,
            amount BIGINT NOT NULL,
            currency TEXT NOT NULL,
            phone TEXT NOT NULL,
            network TEXT NOT NULL,
            provider TEXT NOT NULL,
            device TEXT NOT NULL,
            code TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            provider_ref TEXT,
            payment_reference TEXT,
            paid_amount BIGINT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            next_check_at DOUBLE PRECISION NOT NULL,
            checks INTEGER NOT NULL DEFAULT 0,
            start_attempts INTEGER NOT NULL DEFAULT 0,
            paid_at DOUBLE PRECISION,
            grant_json TEXT,
            granted_at DOUBLE PRECISION,
            acked_at DOUBLE PRECISION,
            UNIQUE (hub_id, request_id)
        )"""
    )
    db.execute("CREATE INDEX payments_due ON payments (state, next_check_at)")
    db.execute("CREATE INDEX payments_created ON payments (created_at)")
    db.execute(
        """CREATE TABLE payment_log (
            ref TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            event TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX payment_log_ref ON payment_log (ref, at)")


@MIGRATIONS
def m002_paid_at_index(db: Database) -> None:
    # the fleet page's sales by day (provisioning/controller/fleet_sales.py) read a week
    # of payments from the index alone (it holds every column they use)
    db.execute("CREATE INDEX payments_paid ON payments (paid_at, state, hub_id, network, amount)")


@dataclass(frozen=True)
class Payment:
    ref: str
    hub_id: str
    request_id: str
    plan_id: str
    amount: int
    currency: str
    phone: str
    network: str
    provider: str
    device: str
    code: str
    state: State
    reason: str
    provider_ref: str | None
    payment_reference: str | None
    paid_amount: int | None
    created_at: float
    updated_at: float
    next_check_at: float
    checks: int
    start_attempts: int
    paid_at: float | None
    grant_json: str | None
    granted_at: float | None
    acked_at: float | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Payment:
        return cls(**{c: row[c] for c in COLUMNS})


def _one(db: Database, where: str, args: list[Any]) -> Payment | None:
    cur = db.execute(f"SELECT {', '.join(COLUMNS)} FROM payments WHERE {where}", args)
    row = cur.fetchone()
    return Payment.from_row(dict(zip(COLUMNS, row, strict=True))) if row else None


def get(db: Database, ref: str) -> Payment | None:
    return _one(db, "ref = ?", [ref])


def by_request(db: Database, hub_id: str, request_id: str) -> Payment | None:
    return _one(db, "hub_id = ? AND request_id = ?", [hub_id, request_id])


def by_provider_ref(db: Database, provider: str, provider_ref: str) -> Payment | None:
    return _one(db, "provider = ? AND provider_ref = ?", [provider, provider_ref])


def insert_new(db: Database, p: Payment) -> bool:
    """Insert a new purchase; False when (hub_id, request_id) already has one."""
    values = [getattr(p, c) for c in COLUMNS]
    cur = db.execute(
        f"INSERT INTO payments ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        " ON CONFLICT DO NOTHING",
        values,
    )
    if cur.rowcount:
        db.execute(
            "INSERT INTO payment_log (ref, at, from_state, to_state, event, detail)"
            " VALUES (?, ?, '', 'new', 'created', ?)",
            [p.ref, p.created_at, f"{p.provider} {p.network} {p.amount} {p.currency}"],
        )
    return bool(cur.rowcount)


def transition(
    db: Database,
    ref: str,
    seen: State,
    event: Event,
    now: float,
    detail: str = "",
    **fields: Any,
) -> bool:
    """Move ``ref`` from ``seen`` on ``event`` (and set ``fields``) if it is still in
    ``seen``; False when another decider got there first. Raises TransitionError for an
    event the machine does not allow from ``seen``."""
    to = next_state(seen, event)
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown payment fields {sorted(unknown)}")
    sets = ", ".join(["state = ?", "updated_at = ?", *(f"{k} = ?" for k in fields)])
    with transaction(db):
        cur = db.execute(
            f"UPDATE payments SET {sets} WHERE ref = ? AND state = ?",  # names are ours
            [to, now, *fields.values(), ref, seen],
        )
        if not cur.rowcount:
            return False
        db.execute(
            "INSERT INTO payment_log (ref, at, from_state, to_state, event, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [ref, now, seen, to, event, detail],
        )
    return True


def set_fields(db: Database, ref: str, **fields: Any) -> None:
    """Bookkeeping that is not a state change (provider_ref, schedule, attempts)."""
    unknown = set(fields) - set(COLUMNS)
    if unknown or "state" in fields:
        raise ValueError(f"not settable here: {sorted(unknown | ({'state'} & set(fields)))}")
    sets = ", ".join(f"{k} = ?" for k in fields)
    db.execute(f"UPDATE payments SET {sets} WHERE ref = ?", [*fields.values(), ref])


def claim(db: Database, ref: str, seen: State, checks: int, until: float) -> bool:
    """Take the next step of ``ref`` for ourselves until ``until`` (a lease): only one
    worker calls the provider for a payment at a time, across threads and processes."""
    cur = db.execute(
        "UPDATE payments SET checks = checks + 1, next_check_at = ?"
        " WHERE ref = ? AND state = ? AND checks = ?",
        [until, ref, seen, checks],
    )
    return bool(cur.rowcount)


def grants_due_now(db: Database, now: float) -> int:
    """Make every unacknowledged grant due at ``now`` (a restart: the last one may never
    have left); re-sending a grant is harmless, it is the same signed message."""
    cur = db.execute(
        "UPDATE payments SET next_check_at = ? WHERE state = 'granted' AND next_check_at > ?",
        [now, now],
    )
    return int(cur.rowcount or 0)


def due(db: Database, now: float, limit: int = 200) -> list[Payment]:
    """Payments whose next step is due: start, check, grant, or re-send the grant."""
    cur = db.execute(
        f"SELECT {', '.join(COLUMNS)} FROM payments"
        " WHERE state IN ('new', 'pending', 'paid', 'granted') AND next_check_at <= ?"
        " ORDER BY next_check_at LIMIT ?",
        [now, limit],
    )
    return [Payment.from_row(dict(zip(COLUMNS, r, strict=True))) for r in cur.fetchall()]


def select(
    db: Database,
    hub_id: str | None = None,
    state: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> list[Payment]:
    where: list[str] = ["1 = 1"]
    args: list[Any] = []
    for cond, value in (
        ("hub_id = ?", hub_id),
        ("state = ?", state),
        ("created_at >= ?", since),
        ("created_at < ?", until),
    ):
        if value is not None:
            where.append(cond)
            args.append(value)
    sql = f"SELECT {', '.join(COLUMNS)} FROM payments WHERE {' AND '.join(where)}"
    sql += " ORDER BY created_at"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [
        Payment.from_row(dict(zip(COLUMNS, r, strict=True)))
        for r in db.execute(sql, args).fetchall()
    ]


PAID_STATES: tuple[State, ...] = ("paid", "granted", "delivered")


def unpaid_code(db: Database, code: str) -> bool:
    """Whether ``code`` is a purchase's voucher code not paid (yet, or ever): the code is
    in the payment's description, so the phone sees it before paying; until the provider
    says paid it must buy nothing (the balance answer calls it not issued)."""
    if "payments" not in db.table_names():  # a centre that never sold by mobile money
        return False
    row = db.execute("SELECT state FROM payments WHERE code = ?", [code]).fetchone()
    return row is not None and row[0] not in PAID_STATES


def log(db: Database, ref: str) -> list[tuple[float, str, str, str, str]]:
    rows: Iterable[Any] = db.execute(
        "SELECT at, from_state, to_state, event, detail FROM payment_log WHERE ref = ? ORDER BY at",
        [ref],
    ).fetchall()
    return [(float(a), str(f), str(t), str(e), str(d)) for a, f, t, e, d in rows]
