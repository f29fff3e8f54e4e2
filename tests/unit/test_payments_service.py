"""The payment service and store without HTTP: a scripted provider and a fake clock.

Crash points are played by building a second service on the same database file."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hub_agent.config import Plan
from hub_agent.payments import verify_grant
from hub_agent.signing import SigningKey
from provisioning.payments import store
from provisioning.payments.base import (
    Callback,
    ProviderStatus,
    ProviderUnavailable,
    RecordRef,
    StartRequest,
    StartResult,
)
from provisioning.payments.cli import CSV_COLUMNS, export_csv
from provisioning.payments.reconcile import reconcile_day
from provisioning.payments.service import PaymentService, RequestRefused, Settings
from provisioning.storage import Database, open_database, transaction

HUB = "tg-sokode-clinique-01"
PLAN = Plan.model_validate({"id": "jour", "name": {"fr": "Pass"}, "down_kbit": 1, "up_kbit": 1})
KEY = SigningKey.generate()


@dataclass
class Scripted:
    name: str = "paygate"
    outcome: str = "pending"
    amount: int | None = None
    unavailable: int = 0  # fail this many start calls
    starts: int = 0

    def start(self, req: StartRequest, known_ref: str | None, record_ref: RecordRef) -> StartResult:
        self.starts += 1
        if self.unavailable:
            self.unavailable -= 1
            raise ProviderUnavailable("timed out")
        record_ref("TX-" + req.ref)
        return StartResult("TX-" + req.ref)

    def status(self, ref: str, provider_ref: str | None) -> ProviderStatus:
        return ProviderStatus(self.outcome, ref, self.amount, "XOF", provider_ref, "OP1")  # type: ignore[arg-type]

    def parse_callback(self, headers: Mapping[str, str], body: bytes, now: float) -> Callback:
        return Callback(json.loads(body)["identifier"], None, None)


@dataclass
class Clock:
    t: float = 1_750_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    path: Path
    provider: Scripted = field(default_factory=Scripted)
    clock: Clock = field(default_factory=Clock)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    services: list[PaymentService] = field(default_factory=list)

    def service(self, **settings: Any) -> PaymentService:
        svc = PaymentService(
            open_database(self.path), KEY, "secret", {"paygate": self.provider},
            {"tmoney": "paygate", "flooz": "paygate"},
            lambda t, p: self.sent.append((t, json.loads(p))),
            lambda hub, plan: (300, PLAN) if plan == "jour" else None,
            Settings(workers=1, **settings), self.clock,
        )  # fmt: skip
        self.services.append(svc)
        return svc

    def grants(self) -> list[dict[str, Any]]:
        return [m for t, m in self.sent if t.endswith("/payments/grant")]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "r.db")
    yield w
    for s in w.services:
        s.close()


def request(svc: PaymentService, rid: str = "r1") -> store.Payment:
    return svc.handle_request(HUB, {"request_id": rid, "plan": "jour", "phone": "90000001",
                                    "device": "0011223344556677"})  # fmt: skip


def test_a_request_is_recorded_once_with_its_code(world: World) -> None:
    svc = world.service()
    p = request(svc)
    assert request(svc).ref == p.ref and p.state == "new" and p.amount == 300
    with pytest.raises(RequestRefused):
        svc.handle_request(HUB, {"request_id": "r3", "plan": "nope", "phone": "90000001",
                                 "device": "0011223344556677"})  # fmt: skip
    assert world.sent[-1][1]["state"] == "failed"
    row = svc.db.execute("SELECT plan_id FROM central_vouchers WHERE code = ?", [p.code]).fetchone()
    assert row == ("jour",)  # the code is a real central voucher of the plan


def test_compare_and_set_lets_one_decider_win(world: World) -> None:
    svc = world.service()
    p = request(svc)
    db: Database = svc.db
    t = world.clock()
    assert store.transition(db, p.ref, "new", "accepted", t + 1)
    assert not store.transition(db, p.ref, "new", "accepted", t + 2)
    assert store.transition(db, p.ref, "pending", "paid", t + 3)
    assert not store.transition(db, p.ref, "pending", "declined", t + 4)
    assert [e[3] for e in store.log(db, p.ref)] == ["created", "accepted", "paid"]


def test_kill_between_paid_and_grant_grants_once_after_restart(world: World) -> None:
    a = world.service()
    p = request(a)
    a.step(p.ref)
    assert store.get(a.db, p.ref).state == "pending"  # type: ignore[union-attr]
    now = world.clock()  # what apply_status writes in one transaction:
    store.transition(a.db, p.ref, "pending", "paid", now, paid_at=now, next_check_at=now)
    # kill -9 here: paid is on disk, no grant was signed or sent
    b = world.service()
    for _ in range(3):
        b.step(p.ref)
    assert len(world.grants()) == 1
    assert verify_grant(world.grants()[0], KEY.public_b64, HUB).ref == p.ref
    world.clock.t += 31  # no acknowledgement: the same grant again
    b.step(p.ref)
    assert len(world.grants()) == 2 and world.grants()[0] == world.grants()[1]
    assert b.handle_ack(HUB, {"ref": p.ref}) and not b.handle_ack("tg-other", {"ref": p.ref})
    world.clock.t += 31
    b.step(p.ref)
    assert len(world.grants()) == 2


def test_a_restart_sends_unacknowledged_grants_at_once(world: World) -> None:
    a = world.service()
    p = request(a)
    a.step(p.ref)
    now = world.clock()
    store.transition(a.db, p.ref, "pending", "paid", now, paid_at=now, next_check_at=now)
    a.step(p.ref)
    assert store.get(a.db, p.ref).state == "granted"  # type: ignore[union-attr]
    world.sent.clear()  # kill -9 between recording the grant and the broker taking it
    b = world.service()
    b.step(p.ref)
    assert world.grants() == []  # not due for GRANT_RESEND_S...
    assert b.resume() == 1  # ...unless the service has just started
    b.step(p.ref)
    assert len(world.grants()) == 1 and world.grants()[0]["ref"] == p.ref


def test_start_retries_then_polls_then_expires(world: World) -> None:
    world.provider.unavailable = 99
    svc = world.service()
    p = request(svc)
    svc.step(p.ref)
    assert store.get(svc.db, p.ref).start_attempts == 1  # type: ignore[union-attr]
    world.clock.t += 61  # START_WINDOW_S: it may have reached the provider; poll it
    svc.step(p.ref)
    assert store.get(svc.db, p.ref).state == "pending"  # type: ignore[union-attr]
    world.clock.t += 15 * 60
    svc.step(p.ref)
    assert store.get(svc.db, p.ref).state == "expired"  # type: ignore[union-attr]
    assert world.grants() == []


def test_reconcile_finds_a_late_payment_and_flags_unpaid_redemptions(world: World) -> None:
    svc = world.service()
    p, q = request(svc, "r1"), request(svc, "r2")
    for x in (p, q):
        svc.step(x.ref)
        store.transition(svc.db, x.ref, "pending", "timed_out", world.clock())
    svc.db.execute(
        "INSERT INTO central_redemptions (code, hub_id, mac, at, plan_id) VALUES (?, ?, ?, ?, ?)",
        [q.code, HUB, "dev", world.clock(), "jour"],
    )
    world.provider.outcome, world.provider.amount = "paid", 300
    report = reconcile_day(svc, world.clock() - 10, world.clock() + 10)
    assert store.get(svc.db, p.ref).state == "granted"  # type: ignore[union-attr]
    assert report.changed == 2 and report.problems == 0
    world.provider.outcome = "failed"
    store.transition(svc.db, q.ref, "granted", "acked", world.clock())
    report = reconcile_day(svc, world.clock() - 10, world.clock() + 10)
    assert report.problems == 2  # sold but the provider says no, for both
    csv_text = export_csv(store.select(svc.db))
    assert csv_text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert f",{HUB},jour,300,tmoney,paygate,TX-{p.ref},OP1,{p.ref},granted" in csv_text


def test_an_unpaid_purchase_code_buys_nothing_until_paid(world: World) -> None:
    """The purchase's code is in the payment's description before the payment: until the
    provider says paid the balance desk answers "not issued" (the hub refuses it online);
    used offline meanwhile (the bounded allowance), it is a finding."""
    from provisioning import balances
    from provisioning.registry import open_registry

    open_registry(world.path).close()  # the centre's registry: hubs, vouchers, balances
    svc = world.service()
    p = request(svc)
    svc.step(p.ref)
    now = world.clock()
    assert store.get(svc.db, p.ref).state == "pending"  # type: ignore[union-attr]
    assert store.unpaid_code(svc.db, p.code)
    assert not balances.answer_for(svc.db, "tg-other", "q1", p.code, "jour", now).issued
    used = balances.Report("tg-other", 1, p.code, 5_000_000, now, 1, "offline", now)
    with transaction(svc.db):
        balances.fold(svc.db, [used], now)
    found = balances.roaming_findings(svc.db)
    assert [(f.kind, f.code) for f in found] == [("unpaid_purchase", p.code)]
    assert balances.finding_lines(found)[0].startswith("unpaid_purchase")
    world.provider.outcome, world.provider.amount = "paid", 300
    assert svc.check_now(p.ref).state == "granted"  # type: ignore[union-attr]
    assert not store.unpaid_code(svc.db, p.code)
    assert balances.answer_for(svc.db, "tg-other", "q2", p.code, "jour", now).issued
    assert "unpaid_purchase" not in {f.kind for f in balances.roaming_findings(svc.db)}
    assert not store.unpaid_code(svc.db, "NOTAPURCHASECODE")
