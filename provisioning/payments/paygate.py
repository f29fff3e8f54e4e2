"""PayGate Global (Lomé): one aggregator for T-Money (Mixx by Yas) and Flooz (Moov).

Wire format, as documented by PayGate Global ("Méthode 1: API", https://paygateglobal.com)
and as used by its published clients (paygateglobal/paygate-php on Packagist; the
flutter_paygateglobal package's api/v1 and api/v2 libraries; many merchant integrations
found with the search tool), and as issue 19 restates it:

* start: ``POST /api/v1/pay`` JSON ``{auth_token, phone_number, amount, description,
  identifier, network}`` with ``network`` ``FLOOZ`` | ``TMONEY``; the answer is
  ``{tx_reference, status}`` where ``status`` is the **request** code (table
  ``REQUEST_STATUS``): 0 recorded, 2 invalid token, 4 invalid parameters, 6 duplicate.
* status: ``POST /api/v2/status`` JSON ``{auth_token, identifier}``; the answer is
  ``{tx_reference, payment_reference, status, datetime, payment_method}`` (some answers
  carry ``amount`` too) where ``status`` is the **payment** code (table
  ``PAYMENT_STATUS``): 0 paid, 2 pending, 4 expired, 6 cancelled.
* callback: PayGate POSTs ``{tx_reference, identifier, payment_reference, amount,
  datetime, payment_method, phone_number}`` to the URL set in the merchant dashboard.
  It is **not signed**: anyone can send one, so it is only a hint to call ``status``.

The two code tables share their numbers and mean different things: they are kept apart
on purpose (a 6 from ``/pay`` is "we already have this identifier", not "cancelled").
``identifier`` is our reference, so a retried ``/pay`` after a timeout answers 6 instead
of prompting the phone a second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisioning.payments.base import (
    Callback,
    CallbackRejected,
    Outcome,
    ProviderRefused,
    ProviderStatus,
    ProviderUnavailable,
    RecordRef,
    StartRequest,
    StartResult,
    as_int,
    call_json,
    callback_json,
)

DEFAULT_BASE_URL = "https://paygateglobal.com"
NETWORK_CODES = {"tmoney": "TMONEY", "flooz": "FLOOZ"}

# POST /api/v1/pay: did PayGate record the request?
REQUEST_RECORDED, REQUEST_BAD_TOKEN, REQUEST_BAD_PARAMS, REQUEST_DUPLICATE = 0, 2, 4, 6
REQUEST_STATUS = {
    REQUEST_RECORDED: "recorded",
    REQUEST_BAD_TOKEN: "invalid auth token",
    REQUEST_BAD_PARAMS: "invalid parameters",
    REQUEST_DUPLICATE: "duplicate identifier",
}

# POST /api/v2/status: where is the payment?
PAYMENT_PAID, PAYMENT_PENDING, PAYMENT_EXPIRED, PAYMENT_CANCELLED = 0, 2, 4, 6
PAYMENT_STATUS: dict[int, tuple[Outcome, str]] = {
    PAYMENT_PAID: ("paid", "paid"),
    PAYMENT_PENDING: ("pending", "pending"),
    PAYMENT_EXPIRED: ("expired", "expired"),
    PAYMENT_CANCELLED: ("failed", "cancelled"),
}


@dataclass
class PayGate:
    auth_token: str
    base_url: str = DEFAULT_BASE_URL
    timeout_s: float = 10.0
    name: str = "paygate"

    def _post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        return call_json("POST", self.base_url.rstrip("/") + path, body, what, self.timeout_s)

    def start(self, req: StartRequest, known_ref: str | None, record_ref: RecordRef) -> StartResult:
        # One call does it all; repeating it is safe (same identifier → duplicate).
        data = self._post(
            "/api/v1/pay",
            {
                "auth_token": self.auth_token,
                "phone_number": req.phone,
                "amount": req.amount,
                "description": req.description,
                "identifier": req.ref,
                "network": NETWORK_CODES[req.network],
            },
            "PayGate /api/v1/pay",
        )
        code = as_int(data.get("status"))
        tx = data.get("tx_reference")
        tx_ref = str(tx) if tx not in (None, "") else known_ref
        if code == REQUEST_RECORDED:
            if tx_ref:
                record_ref(tx_ref)
            return StartResult(tx_ref, REQUEST_STATUS[code])
        if code == REQUEST_DUPLICATE:  # our earlier attempt got through
            return StartResult(tx_ref, REQUEST_STATUS[code])
        if code in (REQUEST_BAD_TOKEN, REQUEST_BAD_PARAMS):
            raise ProviderRefused(f"PayGate: {REQUEST_STATUS[code]}")
        raise ProviderUnavailable(f"PayGate /api/v1/pay: unknown request status {code!r}")

    def status(self, ref: str, provider_ref: str | None) -> ProviderStatus:
        data = self._post(
            "/api/v2/status",
            {"auth_token": self.auth_token, "identifier": ref},
            "PayGate /api/v2/status",
        )
        return parse_status(data, ref)

    def parse_callback(self, headers: Mapping[str, str], body: bytes, now: float) -> Callback:
        """Unsigned: return only which payment to re-check, never an outcome."""
        data = callback_json(body, "PayGate callback")
        if not isinstance(data, dict) or not isinstance(data.get("identifier"), str):
            raise CallbackRejected("PayGate callback: no identifier")
        tx = data.get("tx_reference")
        return Callback(data["identifier"], str(tx) if tx is not None else None, None)


def parse_status(data: Mapping[str, Any], ref: str) -> ProviderStatus:
    code = as_int(data.get("status"))
    if code not in PAYMENT_STATUS:
        # e.g. an unknown identifier: PayGate answers an error object. Not a verdict.
        raise ProviderUnavailable(f"PayGate /api/v2/status: unexpected answer {dict(data)!r}")
    outcome, reason = PAYMENT_STATUS[code]
    tx = data.get("tx_reference")
    pay_ref = data.get("payment_reference")
    echoed = data.get("identifier")
    return ProviderStatus(
        outcome=outcome,
        ref=str(echoed) if echoed is not None else ref,
        amount=as_int(data.get("amount")),  # absent: PayGate debits what /pay asked
        currency="XOF",
        provider_ref=str(tx) if tx is not None else None,
        payment_reference=str(pay_ref) if pay_ref else None,
        method=str(data.get("payment_method") or "") or None,
        reason=reason,
    )
