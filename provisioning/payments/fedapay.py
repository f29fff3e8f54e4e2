"""FedaPay (Cotonou; Togo: Moov ``moov_tg`` and Togocom/Mixx ``togocel``), no redirect.

Wire format, from FedaPay's API reference (docs.fedapay.com: "Create a transaction",
"Gestion des collectes", "Méthodes de paiement": Togo no-redirect modes ``moov_tg`` and
``togocel``) and the official SDKs (fedapay-php ``Transaction::generateToken`` /
``sendNowWithToken``; fedapay-node ``Webhook.ts``), found with the search tool:

* ``POST /v1/transactions`` with ``Authorization: Bearer <secret key>``, JSON
  ``{description, amount, currency: {iso: "XOF"}, callback_url, merchant_reference,
  custom_metadata, customer: {firstname, lastname, phone_number: {number, country}}}``;
  resources come back wrapped: ``{"v1/transaction": {id, reference, amount, status, ...}}``.
* ``POST /v1/transactions/{id}/token`` → ``{token, url}``.
* ``POST /v1/{mode}`` with ``{token, phone_number}`` pushes the USSD prompt to the phone
  (the SDKs' path; issue 19 writes ``/v1/transactions/{mode}``: our simulator answers both).
* ``GET /v1/transactions/{id}``: ``status`` ``pending`` | ``approved`` | ``declined`` |
  ``canceled`` | ``transferred`` (paid, already settled to the merchant) | ...
* webhook (URL set in the dashboard): ``X-FEDAPAY-SIGNATURE: t=<unix>,s=<hex>`` where
  ``s = HMAC-SHA256(webhook secret, "<t>.<raw body>")``; the SDKs refuse a timestamp more
  than 300 s old. Body ``{"name": "transaction.approved", "entity": {...transaction...}}``.

A verified webhook is believed, but its amount, currency and reference are still checked
against what we asked (by the service). Creating a transaction is not idempotent, so the
transaction id is recorded (``record_ref``) before the USSD push; a retry after a crash
resumes with that id and never creates a second transaction the phone could pay.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioning.payments.base import (
    Callback,
    CallbackRejected,
    Outcome,
    ProviderStatus,
    ProviderUnavailable,
    RecordRef,
    StartRequest,
    StartResult,
    as_int,
    call_json,
    callback_json,
)

SANDBOX_URL = "https://sandbox-api.fedapay.com"
LIVE_URL = "https://api.fedapay.com"
MODES = {"tmoney": "togocel", "flooz": "moov_tg"}
SIGNATURE_HEADER = "X-FEDAPAY-SIGNATURE"
TOLERANCE_S = 300
XOF_CURRENCY_ID = 1  # FedaPay's id for XOF, when an entity carries only ``currency_id``
STATUS: dict[str, Outcome] = {
    "pending": "pending",
    "approved": "paid",
    "transferred": "paid",
    "declined": "failed",
    "canceled": "failed",
    "refunded": "failed",
    "expired": "expired",
}


def signature_header(secret: str, body: bytes, t: int) -> str:
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256)
    return f"t={t},s={mac.hexdigest()}"


def verify_signature(secret: str, header: str | None, body: bytes, now: float) -> None:
    """Raise CallbackRejected unless ``header`` signs ``body`` within the tolerance."""
    if not header:
        raise CallbackRejected("FedaPay webhook: no signature")
    t: int | None = None
    sigs: list[str] = []
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        if k == "t" and v.isdigit():
            t = int(v)
        elif k == "s":
            sigs.append(v)
    if t is None or not sigs:
        raise CallbackRejected("FedaPay webhook: malformed signature header")
    expected = signature_header(secret, body, t).split(",s=")[1]
    if not any(hmac.compare_digest(expected, s) for s in sigs):
        raise CallbackRejected("FedaPay webhook: bad signature")
    if abs(now - t) > TOLERANCE_S:  # replay of an old (or far-future) signed body
        raise CallbackRejected("FedaPay webhook: timestamp outside the 300 s tolerance")


def unwrap(data: Mapping[str, Any], resource: str) -> dict[str, Any]:
    for key in (f"v1/{resource}", resource):
        inner = data.get(key)
        if isinstance(inner, dict):
            return inner
    return dict(data)


def parse_transaction(tx: Mapping[str, Any]) -> ProviderStatus:
    raw = str(tx.get("status") or "")
    outcome = STATUS.get(raw)
    if outcome is None:
        raise ProviderUnavailable(f"FedaPay: unknown transaction status {raw!r}")
    currency = None
    cur = tx.get("currency")
    if isinstance(cur, dict) and isinstance(cur.get("iso"), str):
        currency = cur["iso"]
    elif as_int(tx.get("currency_id")) == XOF_CURRENCY_ID:
        currency = "XOF"
    meta = tx.get("custom_metadata")
    ref = tx.get("merchant_reference")
    if not ref and isinstance(meta, dict):
        ref = meta.get("relais_ref")
    tx_id = tx.get("id")
    return ProviderStatus(
        outcome=outcome,
        ref=str(ref) if ref else None,
        amount=as_int(tx.get("amount")),
        currency=currency,
        provider_ref=str(tx_id) if tx_id is not None else None,
        payment_reference=str(tx.get("reference") or "") or None,
        method=str(tx.get("mode") or "") or None,
        reason=raw,
    )


@dataclass
class FedaPay:
    secret_key: str
    webhook_secret: str
    base_url: str = SANDBOX_URL
    callback_url: str = ""
    timeout_s: float = 10.0
    name: str = "fedapay"

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        what = f"FedaPay {method} {path}"
        auth = {"Authorization": f"Bearer {self.secret_key}"}
        return call_json(method, self.base_url.rstrip("/") + path, body, what, self.timeout_s, auth)

    def start(self, req: StartRequest, known_ref: str | None, record_ref: RecordRef) -> StartResult:
        phone = {"number": "+228" + req.phone, "country": "tg"}
        tx_id = known_ref
        if tx_id is None:
            created = unwrap(
                self._call(
                    "POST",
                    "/v1/transactions",
                    {
                        "description": req.description,
                        "amount": req.amount,
                        "currency": {"iso": "XOF"},
                        "callback_url": self.callback_url or None,
                        "merchant_reference": req.ref,
                        "custom_metadata": {"relais_ref": req.ref},
                        "customer": {
                            "firstname": "Client",
                            "lastname": "Relais",
                            "phone_number": phone,
                        },
                    },
                ),
                "transaction",
            )
            if created.get("id") is None:
                raise ProviderUnavailable("FedaPay: created transaction has no id")
            tx_id = str(created["id"])
            record_ref(tx_id)  # before the push: a retry resumes, never re-creates
        else:
            # A start cut short (a crash after the push) resumes here: once the person has
            # answered the prompt, FedaPay refuses a second push, and the status check says
            # what happened.
            done = self.status(req.ref, tx_id)
            if done.outcome != "pending":
                return StartResult(tx_id, f"already {done.reason}")
        token = self._call("POST", f"/v1/transactions/{tx_id}/token", {}).get("token")
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable("FedaPay: no payment token")
        self._call("POST", f"/v1/{MODES[req.network]}", {"token": token, "phone_number": phone})
        return StartResult(tx_id, "prompt sent")

    def status(self, ref: str, provider_ref: str | None) -> ProviderStatus:
        if provider_ref is None:
            raise ProviderUnavailable("FedaPay: no transaction id recorded yet")
        tx = unwrap(self._call("GET", f"/v1/transactions/{provider_ref}", None), "transaction")
        return parse_transaction(tx)

    def parse_callback(self, headers: Mapping[str, str], body: bytes, now: float) -> Callback:
        header = next(
            (v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None
        )
        verify_signature(self.webhook_secret, header, body, now)
        event = callback_json(body, "FedaPay webhook")
        entity = event.get("entity") if isinstance(event, dict) else None
        if not isinstance(entity, dict):
            raise CallbackRejected("FedaPay webhook: no transaction entity")
        try:
            status = parse_transaction(entity)
        except ProviderUnavailable as e:
            raise CallbackRejected(str(e)) from None
        return Callback(status.ref, status.provider_ref, status)
