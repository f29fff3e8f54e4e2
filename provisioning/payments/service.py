"""The central payment service: a thin applier around the pure machine (machine.py).

It takes a hub's purchase request, writes our reference and the voucher code to the
store, then walks each payment forward one step at a time: start at the provider, check
its status (callbacks make a check happen now; the poller makes it happen anyway), sign
and send the grant, re-send it until the hub acknowledges. Each step claims the row
first (a lease in the database) and each state change is compare-and-set, so threads,
processes and restarts never double a charge or a grant; every step is taken again from
the database after a crash, so nothing paid is lost.

``publish(topic, payload)`` is how it talks to hubs (MQTT QoS 1 in production, a list in
tests); ``price_of(hub_id, plan_id)`` says what a plan costs there (the centre's price,
never the hub's).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hub_agent.config import Plan
from hub_agent.payments import Grant, sign_grant
from hub_agent.sessions.vouchers import format_code
from hub_agent.signing import SigningKey
from provisioning import topics
from provisioning.payments import machine, store
from provisioning.payments.base import (
    NETWORKS,
    CallbackRejected,
    Provider,
    ProviderRefused,
    ProviderStatus,
    ProviderUnavailable,
    StartRequest,
    guess_network,
    local_phone,
)
from provisioning.payments.store import Payment
from provisioning.storage import Database, transaction
from provisioning.vouchers import VOUCHERS, issue_batch

log = logging.getLogger("relais.payments")

Publish = Callable[[str, bytes], None]
PriceOf = Callable[[str, str], "tuple[int, Plan] | None"]
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DEVICE_RE = re.compile(r"^[0-9a-f]{8,64}$")


FAULT_ENV = "RELAIS_PAYMENTS_FAULT"


def fault_point(name: str) -> None:
    """The lab's crash hook: kill -9 this very process here when ``RELAIS_PAYMENTS_FAULT``
    names this point (tests/linux/test_payments_lab.py); nothing when it is unset."""
    if os.environ.get(FAULT_ENV) == name:
        log.warning("fault point %s: kill -9 of this process", name)
        os.kill(os.getpid(), signal.SIGKILL)


def payments_topic(hub_id: str, leaf: str) -> str:
    return topics.topic(hub_id, f"payments/{leaf}")


def new_ref() -> str:
    """Our unique reference: PayGate ``identifier``, FedaPay ``merchant_reference``."""
    return "RL" + secrets.token_hex(9).upper()


class RequestRefused(ValueError):
    pass


class _Raced(Exception):
    """The (hub, request) was inserted by someone else meanwhile: undo our code."""


@dataclass(frozen=True)
class Settings:
    expire_after_s: float = machine.EXPIRE_AFTER_S
    start_window_s: float = machine.START_WINDOW_S
    grant_resend_s: float = machine.GRANT_RESEND_S
    lease_s: float = 30.0  # no step holds a payment longer (provider timeouts are 10 s)
    poll_fast_s: float = machine.FAST_EVERY_S
    start_retry_scale: float = 1.0  # tests shrink the start back-off
    workers: int = 8


class PaymentService:
    def __init__(
        self,
        db: Database,
        key: SigningKey,
        voucher_secret: str,
        providers: Mapping[str, Provider],
        routes: Mapping[str, str],
        publish: Publish,
        price_of: PriceOf,
        settings: Settings = Settings(),
        clock: Callable[[], float] = time.time,
        lock: threading.RLock | None = None,
    ) -> None:
        self.db = db
        self.key = key
        self.voucher_secret = voucher_secret
        self.providers = dict(providers)
        self.routes = dict(routes)  # network -> provider name
        self.publish = publish
        self.price_of = price_of
        self.settings = settings
        self.clock = clock
        self.lock = lock or threading.RLock()  # one connection, shared by our threads
        self._wake = threading.Event()
        self._inflight: set[str] = set()
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="payments")
        with self.lock:
            store.MIGRATIONS.apply(db)
            VOUCHERS.apply(db)

    # --- hub requests ---------------------------------------------------------------------
    def handle_request(self, hub_id: str, msg: Mapping[str, Any]) -> Payment:
        """Record a purchase (idempotent per (hub_id, request_id)); the start happens in a
        worker. Raises RequestRefused (after telling the hub) for a bad request."""
        request_id = str(msg.get("request_id") or "")
        try:
            if not _ID_RE.match(request_id):
                raise RequestRefused("request_id: 1-64 letters, digits, '-' or '_'")
            if msg.get("hub_id", hub_id) != hub_id:
                raise RequestRefused("hub_id differs from the topic's")
            with self.lock:
                existing = store.by_request(self.db, hub_id, request_id)
            if existing is not None:
                self._publish_status(existing)  # the hub asked again: answer again
                return existing
            return self._create(hub_id, request_id, msg)
        except RequestRefused as e:
            self._send(hub_id, "status", {"request_id": request_id, "state": "failed",
                                          "reason": str(e), "ts": self.clock()})  # fmt: skip
            raise

    def _create(self, hub_id: str, request_id: str, msg: Mapping[str, Any]) -> Payment:
        plan_id, device = str(msg.get("plan") or ""), str(msg.get("device") or "")
        if not _DEVICE_RE.match(device):
            raise RequestRefused("device: the device pseudonym (hex)")
        try:
            phone = local_phone(str(msg.get("phone") or ""))
        except ValueError as e:
            raise RequestRefused(f"phone: {e}") from None
        network = str(msg.get("network") or guess_network(phone))
        if network not in NETWORKS:
            raise RequestRefused(f"network: one of {', '.join(NETWORKS)}")
        provider = self.routes.get(network)
        if provider not in self.providers:
            raise RequestRefused(f"network: {network} not offered")
        priced = self.price_of(hub_id, plan_id)
        if priced is None:
            raise RequestRefused(f"plan: {plan_id!r} is not sold by mobile money here")
        amount, plan = priced
        now = self.clock()
        try:
            with self.lock, transaction(self.db):  # the code and the row, together
                code = issue_batch(self.db, self.voucher_secret, plan, 1, now).codes[0]
                p = Payment(
                    ref=new_ref(), hub_id=hub_id, request_id=request_id, plan_id=plan.id,
                    amount=amount, currency="XOF", phone=phone, network=network,
                    provider=provider, device=device, code=code, state="new", reason="",
                    provider_ref=None, payment_reference=None, paid_amount=None,
                    created_at=now, updated_at=now, next_check_at=now, checks=0,
                    start_attempts=0, paid_at=None, grant_json=None, granted_at=None,
                    acked_at=None,
                )  # fmt: skip
                if not store.insert_new(self.db, p):
                    raise _Raced
        except _Raced:
            with self.lock:
                raced = store.by_request(self.db, hub_id, request_id)
            assert raced is not None
            return raced
        self._wake.set()
        return p

    def handle_ack(self, hub_id: str, msg: Mapping[str, Any]) -> bool:
        """The hub applied the grant: stop re-sending it."""
        ref = str(msg.get("ref") or "")
        with self.lock:
            p = store.get(self.db, ref)
            if p is None or p.hub_id != hub_id or p.state != "granted":
                return False
            return store.transition(
                self.db, ref, "granted", "acked", self.clock(), acked_at=self.clock()
            )

    # --- provider callbacks ---------------------------------------------------------------
    def handle_callback(
        self, provider_name: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str]:
        """HTTP answer (code, text) for a provider's callback. A verified one (FedaPay) is
        applied after the amount/currency/reference checks; an unsigned one (PayGate)
        only makes us ask the provider now."""
        provider = self.providers.get(provider_name)
        if provider is None:
            return 404, "unknown provider"
        try:
            cb = provider.parse_callback(headers, body, self.clock())
        except CallbackRejected as e:
            log.warning("callback from %s rejected: %s", provider_name, e)
            return 400, str(e)
        with self.lock:
            p = store.get(self.db, cb.ref) if cb.ref else None
            if p is None and cb.provider_ref:
                p = store.by_provider_ref(self.db, provider_name, cb.provider_ref)
        if p is None or p.provider != provider_name:
            return 404, "unknown payment"
        log.info("payment %s: %s callback (%s)", p.ref, provider_name,
                 cb.status.outcome if cb.status else "re-check")  # fmt: skip
        if cb.status is None:
            self.check_now(p.ref)
        else:
            self.apply_status(p, cb.status, f"{provider_name} callback")
        return 200, "ok"

    # --- stepping ---------------------------------------------------------------------------
    def check_now(self, ref: str) -> Payment | None:
        """Ask the provider where ``ref`` stands and apply it (callbacks, reconcile)."""
        with self.lock:
            p = store.get(self.db, ref)
        if p is None or p.state not in ("new", "pending", "failed", "expired"):
            return p
        try:
            status = self.providers[p.provider].status(p.ref, p.provider_ref)
        except (ProviderUnavailable, ProviderRefused) as e:
            log.info("status of %s unavailable: %s", ref, e)
            return p
        return self.apply_status(p, status, "status check")

    def apply_status(self, p: Payment, status: ProviderStatus, source: str) -> Payment:
        """Apply what the provider says; if another decider moved the payment meanwhile,
        decide again from its new state (a callback racing the start, say)."""
        for _ in range(3):
            fresh, moved = self._apply_once(p, status, source)
            if moved or fresh.state == p.state:
                return fresh
            p = fresh
        return p

    def _apply_once(self, p: Payment, status: ProviderStatus, source: str) -> tuple[Payment, bool]:
        event = machine.event_for(machine.Expected(p.ref, p.amount, p.currency), status)
        now = self.clock()
        fields: dict[str, Any] = {}
        if status.provider_ref and not p.provider_ref:
            fields["provider_ref"] = status.provider_ref
        if status.payment_reference:
            fields["payment_reference"] = status.payment_reference
        if event is None or not machine.allowed(p.state, event):
            return p, False
        if event in ("paid", "wrong_amount"):
            fields.update(paid_amount=status.amount if status.amount is not None else p.amount,
                          paid_at=now)  # fmt: skip
        detail = f"{source}: {status.reason}" + (
            f" (amount {status.amount} {status.currency})" if event == "wrong_amount" else ""
        )
        with self.lock:
            moved = store.transition(
                self.db, p.ref, p.state, event, now, detail, reason=status.reason,
                next_check_at=now, **fields,
            )  # fmt: skip
            fresh = store.get(self.db, p.ref)
        assert fresh is not None
        if moved:
            log.info("payment %s: %s -> %s (%s)", p.ref, p.state, fresh.state, detail)
            if fresh.state == "paid":
                fault_point("paid_recorded")  # paid is on disk, no grant recorded or sent
                return self._grant(fresh), True
            self._publish_status(fresh)
        return fresh, moved

    def _grant(self, p: Payment) -> Payment:
        grant = Grant(
            hub_id=p.hub_id, ref=p.ref, request_id=p.request_id, plan=p.plan_id,
            device=p.device, code=p.code, amount=p.amount, currency=p.currency,
            paid_at=float(p.paid_at or p.updated_at),
        )  # fmt: skip
        body = json.dumps(sign_grant(self.key, grant), sort_keys=True)
        now = self.clock()
        with self.lock:
            moved = store.transition(
                self.db, p.ref, "paid", "granted", now, grant_json=body, granted_at=now,
                next_check_at=now + self.settings.grant_resend_s,
            )  # fmt: skip
            fresh = store.get(self.db, p.ref)
        assert fresh is not None
        if moved:  # only the decider that recorded the grant sends it now
            self._send_grant(fresh)
        return fresh

    def step(self, ref: str) -> None:
        """Take the due step of one payment (called by the workers)."""
        now = self.clock()
        with self.lock:
            p = store.get(self.db, ref)
            if p is None or p.next_check_at > now:
                return
            if not store.claim(self.db, ref, p.state, p.checks, now + self.settings.lease_s):
                return
        age = now - p.created_at
        if p.state == "new":
            self._step_start(p, age)
        elif p.state == "pending":
            self._step_check(p, age)
        elif p.state == "paid":
            self._grant(p)
        elif p.state == "granted":
            self._send_grant(p)
            with self.lock:
                store.set_fields(self.db, ref, next_check_at=now + self.settings.grant_resend_s)

    def _step_start(self, p: Payment, age: float) -> None:
        now = self.clock()
        if age >= self.settings.start_window_s:
            with self.lock:  # the provider may have it after all: poll until it expires
                store.transition(self.db, p.ref, "new", "gave_up", now, p.reason, next_check_at=now)
            return
        plan_name = p.plan_id
        req = StartRequest(p.ref, p.amount, p.phone, p.network,  # type: ignore[arg-type]
                           f"Wi-Fi Relais {plan_name}: code {format_code(p.code)}")  # fmt: skip

        def record(provider_ref: str) -> None:
            with self.lock:
                store.set_fields(self.db, p.ref, provider_ref=provider_ref)

        try:
            result = self.providers[p.provider].start(req, p.provider_ref, record)
        except ProviderRefused as e:
            with self.lock:
                store.transition(
                    self.db, p.ref, "new", "refused", self.clock(), str(e), reason=str(e)
                )
                fresh = store.get(self.db, p.ref)
            if fresh is not None:
                self._publish_status(fresh)
            return
        except ProviderUnavailable as e:
            attempts = p.start_attempts + 1
            with self.lock:
                retry_at = self.clock() + machine.start_retry_delay(attempts) * (
                    self.settings.start_retry_scale
                )
                store.set_fields(
                    self.db, p.ref, start_attempts=attempts, reason=str(e), next_check_at=retry_at
                )
            return
        now = self.clock()
        fields: dict[str, Any] = {
            "next_check_at": now + machine.next_check_delay(age, 0, self.settings.poll_fast_s)
        }
        if result.provider_ref:
            fields["provider_ref"] = result.provider_ref
        with self.lock:
            store.transition(
                self.db, p.ref, "new", "accepted", now, result.note, reason="", **fields
            )
            fresh = store.get(self.db, p.ref)
        if fresh is not None:
            self._publish_status(fresh)

    def _step_check(self, p: Payment, age: float) -> None:
        fresh = self.check_now(p.ref)
        now = self.clock()
        if fresh is None or fresh.state != "pending":
            return
        if machine.timed_out(age, self.settings.expire_after_s):
            with self.lock:
                store.transition(self.db, p.ref, "pending", "timed_out", now, "no answer in time",
                                 reason="expired")  # fmt: skip
                final = store.get(self.db, p.ref)
            if final is not None:
                self._publish_status(final)
            return
        with self.lock:
            delay = machine.next_check_delay(age, fresh.checks, self.settings.poll_fast_s)
            store.set_fields(self.db, p.ref, next_check_at=now + delay)

    def run_due(self) -> int:
        """Hand every due payment to a worker (once at a time each); return how many."""
        with self.lock:
            due = store.due(self.db, self.clock())
        started = 0
        for p in due:
            if p.ref in self._inflight:
                continue
            self._inflight.add(p.ref)
            self._pool.submit(self._run_step, p.ref)
            started += 1
        return started

    def _run_step(self, ref: str) -> None:
        try:
            self.step(ref)
        except Exception:  # one payment's bug must not stop the others
            log.exception("payment %s: step failed", ref)
        finally:
            self._inflight.discard(ref)
            self._wake.set()

    def resume(self) -> int:
        """At start: re-send every unacknowledged grant now rather than within
        GRANT_RESEND_S (a kill -9 may have come between recording a grant and sending
        it). Returns how many."""
        with self.lock:
            n = store.grants_due_now(self.db, self.clock())
        self._wake.set()
        return n

    def run(self, stop: threading.Event, tick_s: float = 0.5) -> None:
        self.resume()
        while not stop.is_set():
            self._wake.clear()
            self.run_due()
            self._wake.wait(tick_s)

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- to the hub ---------------------------------------------------------------------
    def _send(self, hub_id: str, leaf: str, payload: Mapping[str, Any]) -> None:
        try:
            self.publish(payments_topic(hub_id, leaf), json.dumps(payload).encode())
        except Exception as e:  # broker away: grants are re-sent until acknowledged
            log.warning("publish to %s/%s failed: %s", hub_id, leaf, e)

    def _send_grant(self, p: Payment) -> None:
        if p.grant_json:
            self._send(p.hub_id, "grant", json.loads(p.grant_json))

    def _publish_status(self, p: Payment) -> None:
        """Unsigned progress for the waiting page (pending/failed/expired/mismatch); the
        grant alone gives access."""
        public = "paid" if p.state in ("paid", "granted", "delivered") else p.state
        self._send(p.hub_id, "status", {"request_id": p.request_id, "ref": p.ref,
                                        "state": public, "reason": p.reason,
                                        "ts": self.clock()})  # fmt: skip
