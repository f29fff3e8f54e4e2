"""Signed payment grants: the centre says "payment REF bought plan P for device D, code C".

Provider keys never reach a hub (a stolen box must not move money or fake payments), so a
hub learns that a phone paid only from the centre, signed with the central Ed25519 key it
already trusts for configs (``trust.central_public_key``). A grant is the JSON payload of
``relais/hubs/{hub_id}/payments/grant``::

    {"kind": "relais.payment.grant", "v": 1, "hub_id": str, "ref": str,
     "request_id": str, "plan": str, "device": str, "code": str, "amount": int,
     "currency": "XOF", "paid_at": float, "key_id": str, "sig": base64}

``sig`` signs the canonical JSON (``hub_agent.signing.canonical``) of every other field, so
nothing can be altered, including the hub it is for. ``device`` is the device pseudonym
the hub sent in its request (``sessions.service.device_pseudonym``), never a MAC; ``code``
is the purchase's central voucher code (any hub verifies it offline), so a phone that left
before the grant arrived, or another device of the buyer, can still log in with it.

``verify_grant`` is pure: the agent calls it on each message, applies a verified grant
once per ``ref`` (it may arrive more than once: QoS 1 and the centre re-sends until the
hub acknowledges on ``payments/ack``), then acknowledges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature

from hub_agent.signing import SigningKey, b64, canonical, key_id, load_public, unb64

KIND = "relais.payment.grant"
VERSION = 1
_FIELDS: dict[str, type] = {
    "kind": str,
    "v": int,
    "hub_id": str,
    "ref": str,
    "request_id": str,
    "plan": str,
    "device": str,
    "code": str,
    "amount": int,
    "currency": str,
    "paid_at": float,
    "key_id": str,
    "sig": str,
}


class GrantError(ValueError):
    """The grant is malformed, unsigned, signed by another key, tampered with, or for
    another hub."""


@dataclass(frozen=True)
class Grant:
    hub_id: str
    ref: str
    request_id: str
    plan: str
    device: str
    code: str
    amount: int
    currency: str
    paid_at: float


def sign_grant(key: SigningKey, grant: Grant) -> dict[str, Any]:
    """The centre's side. Deterministic (Ed25519, no clock read): signing the same grant
    again after a crash gives the same bytes, so a re-sent grant is the same message."""
    body: dict[str, Any] = {
        "kind": KIND,
        "v": VERSION,
        "hub_id": grant.hub_id,
        "ref": grant.ref,
        "request_id": grant.request_id,
        "plan": grant.plan,
        "device": grant.device,
        "code": grant.code,
        "amount": grant.amount,
        "currency": grant.currency,
        "paid_at": float(grant.paid_at),
        "key_id": key_id(key.public_b64),
    }
    return {**body, "sig": b64(key.sign(canonical(body)))}


def verify_grant(message: Any, public_b64: str, hub_id: str) -> Grant:
    """Check shape, key, signature and hub; return the grant. Raises GrantError."""
    if not isinstance(message, dict):
        raise GrantError("grant is not a JSON object")
    if "sig" not in message:
        raise GrantError("grant is not signed")
    missing = sorted(set(_FIELDS) - set(message))
    if missing:
        raise GrantError(f"grant lacks {missing}")
    extra = sorted(set(message) - set(_FIELDS))
    if extra:
        raise GrantError(f"grant has unknown fields {extra}")
    for name, kind in _FIELDS.items():
        value = message[name]
        ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
        if isinstance(value, bool) or not ok:
            raise GrantError(f"{name}: expected {kind.__name__}")
    if message["kind"] != KIND or message["v"] != VERSION:
        raise GrantError(f"not a {KIND} v{VERSION}")
    try:
        trusted = key_id(public_b64)
    except ValueError:
        raise GrantError("bad public key: not base64") from None
    if message["key_id"] != trusted:
        raise GrantError("signed by an unknown key")
    body = {k: v for k, v in message.items() if k != "sig"}
    try:
        load_public(public_b64).verify(unb64(message["sig"]), canonical(body))
    except (InvalidSignature, ValueError):
        raise GrantError("bad signature") from None
    if message["hub_id"] != hub_id:
        raise GrantError(f"grant is for hub {message['hub_id']!r}, not {hub_id!r}")
    if message["amount"] <= 0:
        raise GrantError("amount: not positive")
    return Grant(
        hub_id=message["hub_id"],
        ref=message["ref"],
        request_id=message["request_id"],
        plan=message["plan"],
        device=message["device"],
        code=message["code"],
        amount=message["amount"],
        currency=message["currency"],
        paid_at=float(message["paid_at"]),
    )


def request_payload(
    hub_id: str,
    request_id: str,
    plan: str,
    phone: str,
    network: str,
    device: str,
    ts: float,
) -> dict[str, Any]:
    """What the hub publishes on ``relais/hubs/{hub_id}/payments/request`` (through its
    outbox, QoS 1). ``request_id`` is the hub's own idempotency key (random, kept with
    the purchase): the centre starts one payment per (hub_id, request_id) however many
    times the message arrives. The price is the centre's, never the hub's."""
    return {
        "hub_id": hub_id,
        "request_id": request_id,
        "plan": plan,
        "phone": phone,
        "network": network,
        "device": device,
        "ts": ts,
    }
