"""Ed25519 signing of config envelopes (central key signs, hubs verify).

Envelope (JSON, the payload of ``relais/hubs/{hub_id}/config/desired``)::

    {"hub_id": str, "version": int, "signed_at": ISO-8601 str,
     "config": {...HubConfig wire form...}, "key_id": str, "sig": base64}

``sig`` signs the canonical JSON (sorted keys, no spaces, UTF-8) of every field but
``sig``, so nothing in the envelope can be altered, including which hub it is for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class EnvelopeError(ValueError):
    """The envelope is malformed, unsigned, signed by another key, or for another hub."""


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the PEM with mode 0600 from the start (never world-readable)."""
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    @property
    def public_b64(self) -> str:
        return b64(
            self.private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def key_id(public_b64: str) -> str:
    """Short fingerprint of a public key, to say which key signed without sending it."""
    return hashlib.sha256(unb64(public_b64)).hexdigest()[:16]


def load_public(public_b64: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(unb64(public_b64))
    except ValueError as e:
        raise EnvelopeError(f"bad public key: {e}") from None


def sign_envelope(
    key: SigningKey,
    hub_id: str,
    version: int,
    config: dict[str, Any],
    signed_at: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hub_id": hub_id,
        "version": version,
        "signed_at": (signed_at or datetime.now(UTC)).isoformat(),
        "config": config,
        "key_id": key_id(key.public_b64),
    }
    return {**body, "sig": b64(key.sign(canonical(body)))}


def verify_envelope(envelope: Any, public_b64: str, hub_id: str) -> dict[str, Any]:
    """Check shape, hub and signature; return the envelope's body (without ``sig``)."""
    if not isinstance(envelope, dict):
        raise EnvelopeError("envelope is not a JSON object")
    missing = {"hub_id", "version", "signed_at", "config", "key_id", "sig"} - set(envelope)
    if "sig" in missing:
        raise EnvelopeError("envelope is not signed")
    if missing:
        raise EnvelopeError(f"envelope lacks {sorted(missing)}")
    body = {k: v for k, v in envelope.items() if k != "sig"}
    if not isinstance(envelope["version"], int) or isinstance(envelope["version"], bool):
        raise EnvelopeError("version is not an integer")
    try:
        trusted_id = key_id(public_b64)
    except ValueError:
        raise EnvelopeError("bad public key: not base64") from None
    if envelope["key_id"] != trusted_id:
        raise EnvelopeError("signed by an unknown key")
    try:
        load_public(public_b64).verify(unb64(str(envelope["sig"])), canonical(body))
    except (InvalidSignature, ValueError):
        raise EnvelopeError("bad signature") from None
    if envelope["hub_id"] != hub_id:
        raise EnvelopeError(f"envelope is for hub {envelope['hub_id']!r}, not {hub_id!r}")
    if not isinstance(envelope["config"], dict):
        raise EnvelopeError("config is not a JSON object")
    if envelope["version"] != envelope["config"].get("version"):
        raise EnvelopeError("envelope version differs from the config's version")
    return body
