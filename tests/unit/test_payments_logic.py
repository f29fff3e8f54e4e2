"""Pure payment logic: the machine, provider code tables and signatures, grants, phones."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from hub_agent.payments import Grant, GrantError, sign_grant, verify_grant
from hub_agent.signing import SigningKey
from provisioning.payments import fedapay, machine, paygate
from provisioning.payments.base import (
    CallbackRejected,
    ProviderStatus,
    ProviderUnavailable,
    guess_network,
    local_phone,
)
from provisioning.payments.runner import plan_price

HUB = "tg-kara-ecole-01"
GRANT = Grant(HUB, "RL0123456789ABCDEF01", "req-1", "heure", "a1b2c3d4e5f60718",
              "ABCD2345EFGH", 100, "XOF", 1_750_000_000.0)  # fmt: skip


# --- the machine ------------------------------------------------------------------------
def test_transitions_are_data_and_terminal_states_do_not_move() -> None:
    assert machine.next_state("new", "accepted") == "pending"
    assert machine.next_state("pending", "paid") == "paid"
    assert machine.next_state("expired", "paid") == "paid"  # a late payment is not lost
    for (state, _event), _to in machine.TRANSITIONS.items():
        assert state not in machine.TERMINAL
    with pytest.raises(machine.TransitionError):
        machine.next_state("granted", "paid")  # never a second grant
    with pytest.raises(machine.TransitionError):
        machine.next_state("mismatch", "paid")


def test_poll_schedule_is_fast_then_backs_off_to_a_cap() -> None:
    early = [machine.next_check_delay(age, n) for n, age in enumerate(range(0, 60, 3))]
    assert set(early) == {machine.FAST_EVERY_S}
    later = [machine.next_check_delay(60 + 10 * n, 20 + n) for n in range(12)]
    assert later == sorted(later) and later[0] == machine.BACKOFF_FIRST_S
    assert later[-1] == machine.BACKOFF_MAX_S
    assert machine.timed_out(machine.EXPIRE_AFTER_S) and not machine.timed_out(10)


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (ProviderStatus("pending"), None),
        (ProviderStatus("failed", reason="cancelled"), "declined"),
        (ProviderStatus("expired"), "expired"),
        (ProviderStatus("paid", ref="R1", amount=100, currency="XOF"), "paid"),
        (ProviderStatus("paid", ref="R1"), "paid"),  # PayGate without an amount
        (ProviderStatus("paid", ref="R1", amount=50, currency="XOF"), "wrong_amount"),
        (ProviderStatus("paid", ref="R1", amount=100, currency="EUR"), "wrong_amount"),
        (ProviderStatus("paid", ref="R2", amount=100, currency="XOF"), "wrong_amount"),
    ],
)
def test_event_for_checks_amount_currency_and_reference(
    status: ProviderStatus, event: str | None
) -> None:
    assert machine.event_for(machine.Expected("R1", 100), status) == event


# --- PayGate: two code tables -----------------------------------------------------------
def test_paygate_tables_are_kept_apart() -> None:
    assert paygate.REQUEST_STATUS[6] == "duplicate identifier"
    assert paygate.PAYMENT_STATUS[6] == ("failed", "cancelled")
    assert paygate.PAYMENT_STATUS[0][0] == "paid" and paygate.PAYMENT_STATUS[4][0] == "expired"
    s = paygate.parse_status({"status": 0, "tx_reference": "T1", "payment_reference": "OP1",
                              "identifier": "R1", "amount": "100"}, "R1")  # fmt: skip
    assert (s.outcome, s.amount, s.provider_ref, s.payment_reference) == ("paid", 100, "T1", "OP1")
    with pytest.raises(ProviderUnavailable):
        paygate.parse_status({"error_code": 404}, "R1")


def test_paygate_callback_is_only_a_hint() -> None:
    body = json.dumps({"identifier": "R1", "tx_reference": "T1", "amount": 100}).encode()
    cb = paygate.PayGate("t").parse_callback({}, body, 0)
    assert (cb.ref, cb.provider_ref, cb.status) == ("R1", "T1", None)
    with pytest.raises(CallbackRejected):
        paygate.PayGate("t").parse_callback({}, b"{}", 0)


# --- FedaPay: the signed webhook ----------------------------------------------------------
def _event(status: str = "approved", **tx: Any) -> bytes:
    entity = {"id": 7, "reference": "trx_7", "amount": 100, "status": status,
              "merchant_reference": "R1", "currency_id": 1, **tx}  # fmt: skip
    return json.dumps({"name": f"transaction.{status}", "entity": entity}).encode()


def test_fedapay_signature_known_vector_and_tolerance() -> None:
    expected = hmac.new(b"whsec", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert fedapay.signature_header("whsec", b"{}", 1700000000) == f"t=1700000000,s={expected}"
    body = _event()
    good = fedapay.signature_header("wh", body, 1000)
    fedapay.verify_signature("wh", good, body, 1000 + 299)
    for header, now in [
        (good, 1000 + 301),  # replayed too late
        (good, 1000 - 301),  # from the future
        (fedapay.signature_header("other", body, 1000), 1000),
        ("t=1000", 1000),
        (None, 1000),
    ]:
        with pytest.raises(CallbackRejected):
            fedapay.verify_signature("wh", header, body, now)
    with pytest.raises(CallbackRejected):  # one byte changed
        fedapay.verify_signature("wh", good, body.replace(b"100", b"900"), 1000)


def test_fedapay_webhook_parses_the_transaction() -> None:
    fp = fedapay.FedaPay("sk", "wh")
    body = _event()
    cb = fp.parse_callback(
        {"x-fedapay-signature": fedapay.signature_header("wh", body, 5)}, body, 5
    )
    assert cb.status is not None
    assert (cb.ref, cb.status.outcome, cb.status.amount, cb.status.currency) == (
        "R1", "paid", 100, "XOF")  # fmt: skip
    assert fedapay.parse_transaction({"status": "declined"}).outcome == "failed"
    assert fedapay.parse_transaction({"status": "transferred"}).outcome == "paid"
    with pytest.raises(ProviderUnavailable):
        fedapay.parse_transaction({"status": "weird"})


# --- grants --------------------------------------------------------------------------------
def test_grant_verifies_and_refuses_other_key_other_hub_and_tampering() -> None:
    key = SigningKey.generate()
    msg = sign_grant(key, GRANT)
    assert verify_grant(msg, key.public_b64, HUB) == GRANT
    assert sign_grant(key, GRANT) == msg  # deterministic: a re-sent grant is the same
    with pytest.raises(GrantError, match="unknown key"):
        verify_grant(sign_grant(SigningKey.generate(), GRANT), key.public_b64, HUB)
    with pytest.raises(GrantError, match="for hub"):
        verify_grant(msg, key.public_b64, "tg-other-hub")
    for field, value in [("amount", 1), ("plan", "jour"), ("device", "ffff0000ffff0000"),
                         ("hub_id", "tg-other-hub")]:  # fmt: skip
        with pytest.raises(GrantError, match="bad signature"):
            verify_grant({**msg, field: value}, key.public_b64, HUB)
    forged = sign_grant(SigningKey.generate(), GRANT)  # a hub's own key, relabelled
    with pytest.raises(GrantError):
        verify_grant({**forged, "key_id": msg["key_id"]}, key.public_b64, HUB)
    with pytest.raises(GrantError, match="not signed"):
        verify_grant({k: v for k, v in msg.items() if k != "sig"}, key.public_b64, HUB)
    with pytest.raises(GrantError):
        verify_grant({**msg, "extra": 1}, key.public_b64, HUB)
    with pytest.raises(GrantError):
        verify_grant([msg], key.public_b64, HUB)


# --- phones and prices ------------------------------------------------------------------
def test_phone_numbers_and_networks() -> None:
    assert local_phone("+228 90 12 34 56") == "90123456"
    assert local_phone("0022896123456") == "96123456"
    assert guess_network("90123456") == "tmoney" and guess_network("96123456") == "flooz"
    for bad in ("12345678", "+229 90 12 34 56", "9012345"):
        with pytest.raises(ValueError):
            local_phone(bad)


def test_plan_price_in_whole_francs() -> None:
    assert plan_price({"price_label": "100 FCFA"}) == 100
    assert plan_price({"price_label": "1 000 FCFA"}) == 1000
    assert plan_price({"price_xof": 300, "price_label": "x"}) == 300
    assert plan_price({"price_label": ""}) is None and plan_price({"price_xof": 0}) is None
