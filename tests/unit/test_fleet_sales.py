"""The fleet page's payments card (issue 19): mobile-money sales per hub per day and per
network, aggregated by the database, the same on SQLite and PostgreSQL; a hub's recent
payments; ``/api/fleet.json`` paged like the fleet page (issue 18)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from provisioning import registry
from provisioning.controller import fleet_query, fleet_sales, pages
from provisioning.controller.fleet_query import FleetQuery
from provisioning.payments import store
from provisioning.payments.machine import State
from provisioning.payments.store import Payment
from provisioning.simulate import fleet_ids
from provisioning.storage import Database

NOW = datetime(2026, 3, 14, 15, 0, tzinfo=UTC).timestamp()  # Lomé is UTC all year
DAY = 86_400.0
STATES: tuple[State, ...] = ("paid", "granted", "delivered", "failed", "expired", "pending",
                             "mismatch")  # fmt: skip


def payment(hub_id: str, n: int, network: str, state: State, amount: int, at: float) -> Payment:
    paid = state in fleet_sales.SOLD
    return Payment(
        ref=f"R{n:06d}", hub_id=hub_id, request_id=f"q{n}", plan_id="jour", amount=amount,
        currency="XOF", phone="90000000", network=network, provider="paygate",
        device="d" * 16, code=f"C{n:011d}", state=state, reason="", provider_ref=None,
        payment_reference=f"P{n}" if paid else None, paid_amount=amount if paid else None,
        created_at=at - 30, updated_at=at, next_check_at=at, checks=0, start_attempts=1,
        paid_at=at if paid else None, grant_json=None, granted_at=None, acked_at=None,
    )  # fmt: skip


def seed(db: Database, hubs: int = 30, payments: int = 400) -> list[Payment]:
    fleet = fleet_ids(hubs)
    registry.register_many(db, fleet)
    store.MIGRATIONS.apply(db)
    rng = random.Random(19)
    today = fleet_sales.day_bounds(NOW, "Africa/Lome")[0][1]
    out = []
    for n in range(payments):
        at = NOW - rng.uniform(0, 9 * DAY)  # some older than the window
        if n % 25 == 0:  # on a day's first instant, and half a second before it
            at = today - DAY * rng.randrange(0, 7) - (0.5 if n % 50 else 0.0)
        p = payment(rng.choice(fleet[:20]).id, n, rng.choice(("tmoney", "flooz")),
                    rng.choice(STATES), rng.choice((100, 250, 500, 1000)), at)  # fmt: skip
        assert store.insert_new(db, p)
        out.append(p)
    return out


def expected(
    paid: list[Payment], keep: set[str] | None = None
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(hub or "", day, network) -> (count, FCFA), counted the plain way in Python."""
    acc: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for p in paid:
        if p.state not in fleet_sales.SOLD or p.paid_at is None or p.paid_at > NOW:
            continue
        day = datetime.fromtimestamp(p.paid_at, UTC).date().isoformat()
        if day < "2026-03-08":  # the window: the last 7 days in Lomé
            continue
        for hub in ("", p.hub_id):
            if hub and keep is not None and hub not in keep:
                continue
            acc[(hub, day, p.network)][0] += 1
            acc[(hub, day, p.network)][1] += p.amount
    return {k: (c, a) for k, (c, a) in acc.items()}


def found(view: fleet_sales.SalesView) -> dict[tuple[str, str, str], tuple[int, int]]:
    out = {}
    for s in [*view.days, *view.hubs]:
        for n in fleet_sales.NETWORKS:
            if s.count[n]:
                out[(s.hub_id, s.day, n)] = (s.count[n], s.amount[n])
    return out


def test_sales_per_day_hub_and_network_match_a_plain_count(central_db_url: str) -> None:
    db = registry.open_registry(central_db_url)
    paid = seed(db)
    view = fleet_sales.sales_view(db, FleetQuery(), NOW, NOW - 300, "Africa/Lome")
    assert [d.day for d in view.days] == [f"2026-03-{d:02d}" for d in range(14, 7, -1)]
    assert found(view) == expected(paid)
    assert view.hub_days == len(view.hubs) > 0
    assert [s.day for s in view.hubs] == sorted((s.day for s in view.hubs), reverse=True)
    assert view.hub_names[view.hubs[0].hub_id].strip()
    # a filter narrows the hubs' lines, never the fleet's totals
    region = registry.get_hub(db, view.hubs[0].hub_id)["region"]  # type: ignore[index]
    narrowed = fleet_sales.sales_view(db, FleetQuery(region=region), NOW, NOW - 300, "UTC")
    keep = {str(r["id"]) for r in registry.all_hubs(db) if r["region"] == region}
    assert found(narrowed) == expected(paid, keep)
    assert {s.hub_id for s in narrowed.hubs} <= keep and narrowed.days == view.days


def test_busiest_hub_days_first_when_there_are_more_than_the_page_shows(
    central_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = registry.open_registry(central_db_url)
    paid = seed(db)
    monkeypatch.setattr(fleet_sales, "HUB_ROWS", 5)
    view = fleet_sales.sales_view(db, FleetQuery(), NOW, NOW - 300, "Africa/Lome")
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for (hub, day, _), (_, amount) in expected(paid).items():
        if hub:
            totals[(hub, day)] += amount
    top5 = sorted(totals.values(), reverse=True)[:5]
    assert sorted((s.total_amount for s in view.hubs), reverse=True) == top5
    assert view.hub_days == len(totals) > 5


def test_recent_payments_newest_first_and_a_registry_without_payments(
    central_db_url: str,
) -> None:
    db = registry.open_registry(central_db_url)
    empty = fleet_sales.sales_view(db, FleetQuery(), NOW, NOW - 300, "Africa/Lome")
    assert empty.today.total_count == 0 and not empty.hubs and len(empty.days) == 7
    assert fleet_sales.recent_payments(db, "nope") == []
    paid = seed(db, payments=120)
    hub = paid[0].hub_id
    recent = fleet_sales.recent_payments(db, hub, limit=5)
    mine = sorted((p for p in paid if p.hub_id == hub), key=lambda p: -p.created_at)[:5]
    assert [r.ref for r in recent] == [p.ref for p in mine]
    html = pages.hub_page(
        fleet_query.fleet_page_rows(db, FleetQuery(q=hub), NOW)[1][0], [], [], [], NOW,
        payments=recent,
    )  # fmt: skip
    assert 'id="payments"' in html and "Paiements mobile money récents" in html
    assert mine[0].plan_id in html and "FCFA" in html


def test_fleet_page_payments_card_in_french_and_english(central_db_url: str) -> None:
    db = registry.open_registry(central_db_url)
    paid = seed(db)
    view = fleet_query.fleet_view(db, FleetQuery(), NOW)
    sales = fleet_sales.sales_view(db, view.query, NOW, NOW - 300, "Africa/Lome")
    fr = pages.fleet_page(view, NOW, sales=sales)
    today = expected(paid)
    n = sum(c for (h, d, _), (c, _) in today.items() if not h and d == "2026-03-14")
    assert f"<b>{n}</b>ventes mobile money aujourd&#39;hui" in fr
    assert 'id="sales-days"' in fr and "T-Money" in fr and "Flooz" in fr and "sam. 14/03" in fr
    assert "<th>" in fr and "&lt;th&gt;" not in fr
    en = pages.fleet_page(view, NOW, lang="en", sales=sales)
    assert "mobile-money sales today" in en and "Sat 14/03" in en


def test_fleet_json_is_paged_like_the_page(central_db_url: str) -> None:
    db = registry.open_registry(central_db_url)
    registry.register_many(db, fleet_ids(130))
    first = fleet_query.fleet_json(db, FleetQuery.from_params({"per": ["50"]}), NOW)
    assert first["total"] == 130 and first["pages"] == 3 and len(first["hubs"]) == 50
    assert first["prev"] is None and first["next"] == "/api/fleet.json?page=2"
    seen = [h["id"] for h in first["hubs"]]
    link = first["next"]
    while link:
        qs = link.partition("?")[2]
        params = {k: [v] for k, _, v in (kv.partition("=") for kv in qs.split("&"))}
        page = fleet_query.fleet_json(db, FleetQuery.from_params(params), NOW)
        seen += [h["id"] for h in page["hubs"]]
        link = page["next"]
    assert sorted(seen) == sorted(str(r["id"]) for r in registry.all_hubs(db))
    assert page["prev"] == "/api/fleet.json?page=2" and len(page["hubs"]) == 30
    kara = fleet_query.fleet_json(db, FleetQuery(region="Kara", per=25, page=9), NOW)
    assert {h["region"] for h in kara["hubs"]} == {"Kara"} and kara["page"] == kara["pages"]
    assert kara["next"] is None and "region=Kara" in (kara["prev"] or "region=Kara")
