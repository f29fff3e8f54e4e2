"""The fleet page's payments card: mobile-money sales per hub per day, by network.

Read from the centre's ``payments`` table (``provisioning.payments.store``, written by the
payments service) and aggregated by the database: one ``GROUP BY`` for the fleet's days,
one for the hubs' days (limited to the hubs the page's filters select), whatever the
fleet's size; no per-hub loop. A sale is a payment the provider confirmed (``paid``,
``granted``, ``delivered``), on the local day of ``paid_at``. Days are bucketed by a
``CASE`` over day boundaries computed here in the hubs' time zone, so the same SQL runs
on SQLite and PostgreSQL (their ``CAST`` of a float and their date functions differ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from provisioning.controller.fleet_query import FleetQuery
from provisioning.storage import Database

DAYS = 7
HUB_ROWS = 100  # hub-days listed on the page (the busiest first); the totals count them all
RECENT = 20  # payments listed on a hub's page
NETWORKS = ("tmoney", "flooz")
SOLD = ("paid", "granted", "delivered")
# ``state || ''``: not indexable, on purpose. With a plain ``state IN`` SQLite's planner
# takes the state index (payments_due) and visits every sale ever made; this way it takes
# the paid_at range (index payments_paid), a week's rows whatever the table's age.
SOLD_SQL = "(state || '') IN (" + ", ".join(f"'{s}'" for s in SOLD) + ")"


@dataclass
class DaySales:
    """One day's sales (of the fleet, or of one hub): count and FCFA per network."""

    day: str  # local date, "2026-03-14"
    hub_id: str = ""  # "" for the fleet's total
    count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NETWORKS, 0))
    amount: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NETWORKS, 0))

    @property
    def total_count(self) -> int:
        return sum(self.count.values())

    @property
    def total_amount(self) -> int:
        return sum(self.amount.values())


@dataclass
class SalesView:
    days: list[DaySales]  # the fleet, newest first, every day of the window
    hubs: list[DaySales]  # hub-days with a sale, busiest first (at most HUB_ROWS)
    hub_days: int  # how many hub-days had a sale (hubs lists at most HUB_ROWS)
    hub_names: dict[str, str]

    @property
    def today(self) -> DaySales:
        return self.days[0]


def day_bounds(now: float, tz: str, days: int = DAYS) -> list[tuple[str, float]]:
    """(local date, its first instant) for today and the ``days - 1`` before, newest first."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now, zone).date()
    out = []
    for i in range(days):
        d = today - timedelta(days=i)
        start = datetime(d.year, d.month, d.day, tzinfo=zone)
        out.append((d.isoformat(), start.timestamp()))
    return out


def _day_case(bounds: list[tuple[str, float]]) -> tuple[str, list[Any]]:
    """SQL giving a row's day index (0 = today) from ``paid_at``, and its parameters."""
    whens = " ".join(f"WHEN paid_at >= ? THEN {i}" for i in range(len(bounds)))
    return f"(CASE {whens} END)", [start for _, start in bounds]


def has_payments(db: Database) -> bool:
    return "payments" in db.table_names()


def sales_view(
    db: Database, fq: FleetQuery, now: float, cutoff: float, tz: str, days: int = DAYS
) -> SalesView:
    """The last ``days`` local days of sales: the fleet's, and per hub for the hubs the
    page's filters (``fq``: search, region, kind, state, config) select."""
    bounds = day_bounds(now, tz, days)
    fleet = [DaySales(day) for day, _ in bounds]
    if not has_payments(db):
        return SalesView(fleet, [], 0, {})
    case, case_args = _day_case(bounds)
    window = f"{SOLD_SQL} AND paid_at >= ? AND paid_at < ?"
    window_args = [bounds[-1][1], now + 1.0]
    for d, *split in db.execute(
        f"SELECT {case} AS d, {_SPLIT_SQL} FROM payments WHERE {window} GROUP BY 1",
        [*case_args, *window_args],
    ).fetchall():
        _fill(fleet[int(d)], split)

    where, where_args = fq.where(cutoff)
    # the week's sales per hub and day first, then the hubs the filters select: the
    # planners then read the week once (a join first made PostgreSQL loop over the hubs
    # for each payment); ``|| ''`` keeps SQLite from reading those hubs' payments of all
    # time through the (hub_id, request_id) index should it push the filter down
    per_hub = (
        f"SELECT * FROM (SELECT hub_id, {case} AS d, {_SPLIT_SQL}, sum(amount) AS total"
        f" FROM payments WHERE {window} GROUP BY 1, 2) AS a"
    )
    if where:
        per_hub += f" WHERE (a.hub_id || '') IN (SELECT id FROM hubs{where})"
    args = [*case_args, *window_args, *where_args]
    (hub_days,) = db.execute(f"SELECT count(*) FROM ({per_hub}) AS x", args).fetchone()
    hubs = []
    for hub_id, d, *split in db.execute(
        f"{per_hub} ORDER BY total DESC, d, hub_id LIMIT {int(HUB_ROWS)}", args
    ).fetchall():
        hubs.append(_fill(DaySales(bounds[int(d)][0], str(hub_id)), split[:-1]))
    hubs.sort(key=lambda s: s.day, reverse=True)  # stable: newest day, busiest hub first
    return SalesView(fleet, hubs, int(hub_days), _names(db, {s.hub_id for s in hubs}))


# count and FCFA of each network, as columns (one GROUP BY gives the split)
_SPLIT_SQL = ", ".join(
    f"sum(CASE WHEN network = '{n}' THEN 1 ELSE 0 END) AS n_{n},"
    f" sum(CASE WHEN network = '{n}' THEN amount ELSE 0 END) AS fcfa_{n}"
    for n in NETWORKS
)


def _fill(sale: DaySales, split: list[Any]) -> DaySales:
    for i, n in enumerate(NETWORKS):
        sale.count[n] = int(split[2 * i] or 0)
        sale.amount[n] = int(split[2 * i + 1] or 0)
    return sale


def _names(db: Database, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    return {
        str(i): str(n)
        for i, n in db.execute(
            f"SELECT id, name FROM hubs WHERE id IN ({marks})", sorted(ids)
        ).fetchall()
    }


@dataclass(frozen=True)
class RecentPayment:
    ref: str
    created_at: float
    plan_id: str
    amount: int
    currency: str
    network: str
    provider: str
    state: str
    payment_reference: str | None
    paid_at: float | None


def recent_payments(db: Database, hub_id: str, limit: int = RECENT) -> list[RecentPayment]:
    """A hub's last payments, newest first, every state (failed and expired ones too)."""
    if not has_payments(db):
        return []
    cols = ("ref, created_at, plan_id, amount, currency, network, provider, state,"
            " payment_reference, paid_at")  # fmt: skip
    return [
        RecentPayment(str(r), float(c), str(p), int(a), str(cu), str(n), str(pr), str(s),
                      None if ref is None else str(ref), None if pa is None else float(pa))
        for r, c, p, a, cu, n, pr, s, ref, pa in db.execute(
            f"SELECT {cols} FROM payments WHERE hub_id = ? ORDER BY created_at DESC LIMIT ?",
            [hub_id, limit],
        ).fetchall()
    ]  # fmt: skip
