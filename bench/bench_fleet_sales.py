"""The fleet page's payments card (provisioning/controller/fleet_sales.py) against a year
of mobile-money payments, beside the rest of the fleet page measured in the same run.

    .venv/bin/python bench/bench_fleet_sales.py [--hubs 2000] [--payments 500000]
                                                [--repeat 5] [--pg]

A registry (SQLite in a temp folder, or with ``--pg`` a throwaway PostgreSQL from
lab/postgres.py) gets ``--hubs`` simulated hubs and ``--payments`` payments spread over
the last 365 days (half of them sold, the rest failed or expired). The bench prints the
median time of ``sales_view`` (the whole fleet, and one region's hubs) and of
``fleet_view`` (the page's table, cards and map), and their ratio: what the card adds to a
page load whatever the age of the table. It prints the query plan of the week's read.
Benches print; they do not assert timing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.postgres import PgServer  # noqa: E402
from provisioning import registry  # noqa: E402
from provisioning.controller import fleet_query, fleet_sales  # noqa: E402
from provisioning.controller.fleet_query import FleetQuery  # noqa: E402
from provisioning.payments import store  # noqa: E402
from provisioning.simulate import fleet_ids  # noqa: E402
from provisioning.storage import Database, transaction  # noqa: E402

DAY = 86_400.0
TZ = "Africa/Lome"


def populate(db: Database, hubs: int, payments: int, now: float) -> None:
    records = fleet_ids(hubs)
    registry.register_many(db, records)
    fleet = [h.id for h in records]
    store.MIGRATIONS.apply(db)
    rng = random.Random(19)
    cols = ", ".join(store.COLUMNS)
    marks = ", ".join("?" * len(store.COLUMNS))
    batch: list[list[object]] = []
    for n in range(payments):
        at = now - rng.uniform(0, 365 * DAY)
        state = rng.choice(("delivered", "delivered", "failed", "expired"))
        sold = state == "delivered"
        row = {
            "ref": f"RL{n:09d}", "hub_id": rng.choice(fleet), "request_id": f"q{n}",
            "plan_id": "jour", "amount": rng.choice((100, 300, 500)), "currency": "XOF",
            "phone": "90000000", "network": rng.choice(("tmoney", "flooz")),
            "provider": "paygate", "device": "d" * 16, "code": f"C{n:011d}", "state": state,
            "reason": "", "provider_ref": None, "payment_reference": None,
            "paid_amount": None, "created_at": at - 30, "updated_at": at,
            "next_check_at": at, "checks": 0, "start_attempts": 1,
            "paid_at": at if sold else None, "grant_json": None, "granted_at": None,
            "acked_at": None,
        }  # fmt: skip
        batch.append([row[c] for c in store.COLUMNS])
        if len(batch) == 20_000 or n == payments - 1:
            with transaction(db):
                db.executemany(f"INSERT INTO payments ({cols}) VALUES ({marks})", batch)
            batch = []
    if db.engine == "postgresql":
        db.execute("ANALYZE payments")


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def run(db: Database, args: argparse.Namespace) -> None:
    now = time.time()
    t0 = time.monotonic()
    populate(db, args.hubs, args.payments, now)
    print(f"{db.engine}: {args.hubs} hubs, {args.payments} payments over a year"
          f" (loaded in {time.monotonic() - t0:.0f} s)")  # fmt: skip
    cutoff = now - 300
    region = FleetQuery(region="Kara")
    page = median_ms(lambda: fleet_query.fleet_view(db, FleetQuery(), now), args.repeat)
    rows = [
        ("payments card, whole fleet", FleetQuery()),
        ("payments card, region Kara", region),
    ]
    print(f"  {'fleet page without the card':<30} {page:8.1f} ms  (baseline)")
    for label, fq in rows:

        def card(fq: FleetQuery = fq) -> object:
            return fleet_sales.sales_view(db, fq, now, cutoff, TZ)

        ms = median_ms(card, args.repeat)
        print(f"  {label:<30} {ms:8.1f} ms  ({ms / page:.2f} x the page)")
    bounds = fleet_sales.day_bounds(now, TZ)
    sql = (
        f"SELECT count(*) FROM payments WHERE {fleet_sales.SOLD_SQL}"
        " AND paid_at >= ? AND paid_at < ?"
    )
    explain = "EXPLAIN QUERY PLAN " if db.engine == "sqlite" else "EXPLAIN "
    print("  plan of the week's read:")
    for row in db.execute(explain + sql, [bounds[-1][1], now + 1]).fetchall():
        print("   ", row[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hubs", type=int, default=2000)
    p.add_argument("--payments", type=int, default=500_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--pg", action="store_true", help="on a throwaway PostgreSQL")
    args = p.parse_args()
    if args.pg:
        with PgServer() as server:
            run(registry.open_registry(server.new_database()), args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(registry.open_registry(f"sqlite://{tmp}/registry.db"), args)


if __name__ == "__main__":
    main()
