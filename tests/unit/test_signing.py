"""The Ed25519 envelope: what verifies, and every way a bad one is refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hub_agent.signing import EnvelopeError, SigningKey, sign_envelope, verify_envelope

KEY = SigningKey.generate()
OTHER = SigningKey.generate()


def env(version: int = 2, hub: str = "hub-a") -> dict[str, Any]:
    return sign_envelope(KEY, hub, version, {"version": version, "hub": {"id": hub}})


def test_a_signed_envelope_verifies_and_returns_its_body() -> None:
    body = verify_envelope(env(), KEY.public_b64, "hub-a")
    assert body["version"] == 2 and "sig" not in body


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("sig"), "not signed"),
        (lambda e: e.pop("key_id"), "lacks"),
        (lambda e: e["config"].update(version=3), "bad signature"),
        (lambda e: e.update(hub_id="hub-b"), "bad signature"),
        (lambda e: e.update(sig="!!notbase64"), "bad signature"),
        (lambda e: e.update(version="2"), "not an integer"),
    ],
)
def test_tampering_is_refused(mutate: Any, message: str) -> None:
    e = copy.deepcopy(env())
    mutate(e)
    with pytest.raises(EnvelopeError, match=message):
        verify_envelope(e, KEY.public_b64, "hub-a")


def test_another_key_or_another_hub_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="unknown key"):
        verify_envelope(env(), OTHER.public_b64, "hub-a")
    forged = sign_envelope(OTHER, "hub-a", 2, {"version": 2})
    forged["key_id"] = env()["key_id"]  # claims the trusted key
    with pytest.raises(EnvelopeError, match="bad signature"):
        verify_envelope(forged, KEY.public_b64, "hub-a")
    with pytest.raises(EnvelopeError, match="for hub 'hub-a'"):
        verify_envelope(env(), KEY.public_b64, "hub-b")


def test_malformed_input_raises_envelope_error_not_a_crash() -> None:
    with pytest.raises(EnvelopeError, match="not a JSON object"):
        verify_envelope([1, 2], KEY.public_b64, "hub-a")
    with pytest.raises(EnvelopeError, match="bad public key"):
        verify_envelope(env(), "%%%", "hub-a")
    odd = sign_envelope(KEY, "hub-a", 2, ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="config is not a JSON object"):
        verify_envelope(odd, KEY.public_b64, "hub-a")
    mismatch = sign_envelope(KEY, "hub-a", 2, {"version": 5})
    with pytest.raises(EnvelopeError, match="differs"):
        verify_envelope(mismatch, KEY.public_b64, "hub-a")
