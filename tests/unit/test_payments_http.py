"""Real HTTP on 127.0.0.1: the payment service and its provider modules against the
simulator (both wire formats), callbacks through the service's own endpoint.

Every wait is on a condition (a published grant, a state in the store), never a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hub_agent.config import Plan
from hub_agent.payments import GrantError, verify_grant
from hub_agent.signing import SigningKey
from provisioning.payments import store
from provisioning.payments.base import Provider, StartRequest
from provisioning.payments.fedapay import FedaPay
from provisioning.payments.paygate import PayGate
from provisioning.payments.service import PaymentService, Settings
from provisioning.payments.simulator import SimConfig, Simulator
from provisioning.payments.web import serve
from provisioning.storage import open_database

HUB = "tg-lome-mairie-01"
PLAN = Plan.model_validate(
    {"id": "heure", "name": {"fr": "Pass 1 heure"}, "down_kbit": 2000, "up_kbit": 1000}
)
DEVICE = "a1b2c3d4e5f60718"
FAST = Settings(poll_fast_s=0.2, start_retry_scale=0.05, grant_resend_s=60)


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)  # polling interval of the condition, not a fixed wait
    raise AssertionError(f"timed out waiting for {what or cond}")


@dataclass
class Outbox:
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, json.loads(payload)))

    def on(self, leaf: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for t, m in self.messages if t == f"relais/hubs/{HUB}/payments/{leaf}"]


@dataclass
class Centre:
    db_path: Path
    key: SigningKey
    sim: Simulator
    outbox: Outbox
    service: PaymentService | None = None
    stop: threading.Event | None = None
    thread: threading.Thread | None = None
    web: Any = None

    def start(self, routes: dict[str, str]) -> PaymentService:
        sim = self.sim
        providers: dict[str, Provider] = {
            "paygate": PayGate(sim.config.paygate_token, base_url=sim.url, timeout_s=3),
            "fedapay": FedaPay(
                sim.config.fedapay_secret_key,
                sim.config.fedapay_webhook_secret,
                base_url=sim.url,
                timeout_s=3,
            ),
        }
        db = open_database(self.db_path)
        svc = PaymentService(
            db, self.key, "voucher-secret", providers, routes, self.outbox.publish,
            lambda hub, plan: (100, PLAN) if plan == "heure" else None, FAST,
        )  # fmt: skip
        self.web = serve(svc, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{self.web.server_address[1]}/payments/callback"
        sim.config.paygate_callback = f"{base}/paygate"
        sim.config.fedapay_webhook = f"{base}/fedapay"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=svc.run, args=(self.stop, 0.05), daemon=True)
        self.thread.start()
        self.service = svc
        return svc

    def halt(self) -> None:
        """Stop the service the hard way for its peers: no callback endpoint, no worker."""
        assert self.stop and self.thread and self.service
        self.web.shutdown()
        self.web.server_close()
        self.stop.set()
        self.thread.join(5)
        self.service.close()
        self.service.db.close()
        self.service = None

    def payment(self, ref: str) -> store.Payment:
        db = open_database(self.db_path)
        try:
            p = store.get(db, ref)
        finally:
            db.close()
        assert p is not None
        return p


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[Centre]:
    sim = Simulator(SimConfig())
    sim.serve()
    c = Centre(tmp_path / "registry.db", SigningKey.generate(), sim, Outbox())
    yield c
    if c.service is not None:
        c.halt()
    sim.close()


ROUTES = {
    "paygate": {"tmoney": "paygate", "flooz": "paygate"},
    "fedapay": {"tmoney": "fedapay", "flooz": "fedapay"},
}


def buy(c: Centre, request_id: str = "req-1", network: str = "flooz") -> store.Payment:
    assert c.service is not None
    p = c.service.handle_request(
        HUB,
        {"hub_id": HUB, "request_id": request_id, "plan": "heure", "phone": "+228 96 00 00 01",
         "network": network, "device": DEVICE, "ts": time.time()},
    )  # fmt: skip
    wait_until(lambda: c.payment(p.ref).state == "pending", what="pending")
    return p


@pytest.mark.parametrize("provider", ["paygate", "fedapay"])
def test_confirm_pays_and_grants_once(centre: Centre, provider: str) -> None:
    svc = centre.start(ROUTES[provider])
    p = buy(centre)
    code, answer = centre.sim.control("confirm", {"ref": p.ref})
    assert code == 200 and answer["callbacks"] == [200]
    grants = wait_until(lambda: centre.outbox.on("grant"), what="grant")
    grant = verify_grant(grants[0], centre.key.public_b64, HUB)
    assert (grant.ref, grant.plan, grant.device, grant.amount) == (p.ref, "heure", DEVICE, 100)
    assert grant.code == p.code and centre.sim.payments[p.ref].pushed == 1
    assert centre.sim.payments[p.ref].description.endswith(p.code[:4] + "-" + p.code[4:8]
                                                             + "-" + p.code[8:])  # fmt: skip
    assert svc.handle_ack(HUB, {"ref": p.ref})
    assert centre.payment(p.ref).state == "delivered"
    assert len(centre.outbox.on("grant")) == 1
    with pytest.raises(GrantError):
        verify_grant(grants[0], SigningKey.generate().public_b64, HUB)


@pytest.mark.parametrize("provider", ["paygate", "fedapay"])
@pytest.mark.parametrize(
    ("action", "body", "state"),
    [
        ("refuse", {}, "failed"),
        ("expire", {}, "expired"),
        ("confirm", {"amount": 50}, "mismatch"),
    ],
)
def test_no_access_without_the_right_payment(
    centre: Centre, provider: str, action: str, body: dict[str, Any], state: str
) -> None:
    centre.start(ROUTES[provider])
    p = buy(centre)
    centre.sim.control(action, {"ref": p.ref, **body})
    wait_until(lambda: centre.payment(p.ref).state == state, what=state)
    statuses = wait_until(lambda: [s for s in centre.outbox.on("status") if s["state"] == state])
    assert statuses[-1]["ref"] == p.ref
    assert centre.outbox.on("grant") == []


def test_forged_fedapay_webhook_is_refused(centre: Centre) -> None:
    centre.start(ROUTES["fedapay"])
    p = buy(centre)
    _, answer = centre.sim.control("callback", {"ref": p.ref, "forged": True})
    assert answer["callbacks"] == [400]
    assert centre.payment(p.ref).state == "pending" and centre.outbox.on("grant") == []


def test_unsigned_paygate_callback_only_triggers_a_check(centre: Centre) -> None:
    centre.start(ROUTES["paygate"])
    p = buy(centre)
    _, answer = centre.sim.control("callback", {"ref": p.ref, "forged": True})
    assert answer["callbacks"] == [200]  # heard, re-checked: the status says pending
    assert centre.payment(p.ref).state == "pending" and centre.outbox.on("grant") == []


@pytest.mark.parametrize("provider", ["paygate", "fedapay"])
def test_duplicate_callbacks_and_requests_grant_once(centre: Centre, provider: str) -> None:
    svc = centre.start(ROUTES[provider])
    p = buy(centre)
    again = svc.handle_request(HUB, {"request_id": "req-1", "plan": "heure",
                                     "phone": "96000001", "device": DEVICE})  # fmt: skip
    assert again.ref == p.ref
    _, answer = centre.sim.control("confirm", {"ref": p.ref, "copies": 3})
    assert answer["callbacks"] == [200, 200, 200]
    centre.sim.control("callback", {"ref": p.ref, "copies": 2})
    wait_until(lambda: centre.payment(p.ref).state == "granted", what="granted")
    assert len(centre.outbox.on("grant")) == 1
    assert centre.sim.payments[p.ref].pushed == 1  # one USSD prompt: never charged twice


@pytest.mark.parametrize("provider", ["paygate", "fedapay"])
def test_restart_mid_flow_grants_exactly_once(centre: Centre, provider: str) -> None:
    centre.start(ROUTES[provider])
    p = buy(centre)
    centre.halt()  # the centre is down when the phone confirms: the callback is lost
    _, answer = centre.sim.control("confirm", {"ref": p.ref})
    assert answer["callbacks"] == [0]
    centre.start(ROUTES[provider])  # the poller finds it paid
    wait_until(lambda: centre.outbox.on("grant"), what="grant after restart")
    wait_until(lambda: centre.payment(p.ref).state == "granted")
    assert len(centre.outbox.on("grant")) == 1
    assert centre.sim.payments[p.ref].pushed == 1


@pytest.mark.parametrize("provider", ["paygate", "fedapay"])
def test_provider_5xx_at_start_is_retried_without_a_second_prompt(
    centre: Centre, provider: str
) -> None:
    centre.sim.control("faults", {"fail_next": 2})
    centre.start(ROUTES[provider])
    p = buy(centre)
    assert centre.payment(p.ref).start_attempts >= 1
    assert centre.sim.payments[p.ref].pushed == 1
    centre.sim.control("confirm", {"ref": p.ref})
    wait_until(lambda: centre.outbox.on("grant"), what="grant")


def test_a_fedapay_start_resumed_after_the_answer_does_not_push_again(centre: Centre) -> None:
    """A centre killed after the USSD push but before recording it starts again: the
    person has answered meanwhile, so the resumed start asks the status instead of pushing
    (FedaPay refuses a second push of an answered transaction: the sale would be lost)."""
    sim = centre.sim
    feda = FedaPay(sim.config.fedapay_secret_key, sim.config.fedapay_webhook_secret,
                   base_url=sim.url, timeout_s=3)  # fmt: skip
    req = StartRequest("RLRESUME0001", 100, "96000001", "flooz", "Wi-Fi Relais heure")
    recorded: list[str] = []
    first = feda.start(req, None, recorded.append)
    assert first.provider_ref == recorded[0]
    sim.control("confirm", {"ref": req.ref})
    again = feda.start(req, recorded[0], recorded.append)
    assert again.provider_ref == recorded[0] and again.note == "already approved"
    assert sim.payments[req.ref].pushed == 1
    assert feda.status(req.ref, recorded[0]).outcome == "paid"
