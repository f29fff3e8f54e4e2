"""Secrets of the portal: the caretaker's password hash, CSRF tokens, admin sessions.

Password hashes are ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``: self-describing, so
the cost can be raised later without breaking hashes already set at provisioning.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

_SCRYPT_LOG2_N = 14  # 16 MiB of memory, ~50 ms on a hub: slow for guessers, fine for one login
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
MIN_SECRET_BYTES = 32


class BadPasswordHash(ValueError):
    """The configured hash is not one ``hash_password`` produced."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=1 << log2_n,
        r=r,
        p=p,
        maxmem=256 * 1024 * 1024,
        dklen=_KEY_BYTES,
    )


def hash_password(password: str, *, log2_n: int = _SCRYPT_LOG2_N) -> str:
    """A salted scrypt hash of ``password`` for ``portal.admin_password_hash``."""
    if not password:
        raise ValueError("password: must not be empty")
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, log2_n, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${log2_n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True)
class ParsedHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def parse_hash(stored: str) -> ParsedHash:
    """Split a stored hash; raise BadPasswordHash naming what is wrong."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise BadPasswordHash("expected scrypt$<log2 n>$<r>$<p>$<salt>$<hash>")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise BadPasswordHash("cost parameters must be integers and salt/hash base64") from None
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise BadPasswordHash("scrypt cost parameters out of range")
    if len(salt) < 8 or len(digest) < 16:
        raise BadPasswordHash("salt or hash too short")
    return ParsedHash(log2_n, r, p, salt, digest)


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; constant-time comparison of the digests."""
    try:
        h = parse_hash(stored)
    except BadPasswordHash:
        return False
    candidate = _scrypt(password, h.salt, h.log2_n, h.r, h.p)
    return hmac.compare_digest(candidate[: len(h.digest)], h.digest)


def load_or_create_secret(path: Path | None) -> bytes:
    """The signing key: from ``path`` (created 0600 if missing) or fresh for this run.

    There is no default secret: without a file every start draws a new key, which only
    means forms and caretaker sessions from before a restart must be submitted again.
    """
    if path is None:
        return secrets.token_bytes(MIN_SECRET_BYTES)
    if path.exists():
        data = path.read_bytes().strip()
        if len(data) < MIN_SECRET_BYTES:
            raise ValueError(f"{path}: secret shorter than {MIN_SECRET_BYTES} bytes")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(MIN_SECRET_BYTES).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class CsrfSigner:
    """Stateless CSRF tokens: HMAC(key, purpose | binding | issued_at), valid for a while.

    Public forms bind to the device's IP (the identity the agent uses too), so the page
    works on browsers that refuse cookies; caretaker forms bind to the admin session id.
    A page on another origin cannot read the token, and the host check refuses rebinding.
    """

    def __init__(self, key: bytes, max_age_s: int = 4 * 3600) -> None:
        self._key = hashlib.sha256(b"relais-csrf\0" + key).digest()
        self.max_age_s = max_age_s

    def _mac(self, purpose: str, binding: str, issued: int) -> str:
        msg = f"{purpose}\0{binding}\0{issued}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def issue(self, purpose: str, binding: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self._mac(purpose, binding, issued)}"

    def check(self, token: str, purpose: str, binding: str, now: float | None = None) -> bool:
        issued_s, _, mac = token.partition(".")
        if not issued_s.isdigit() or len(issued_s) > 12 or not mac:
            return False
        issued = int(issued_s)
        t = time.time() if now is None else now
        if not (t - self.max_age_s <= issued <= t + 60):
            return False
        return hmac.compare_digest(mac, self._mac(purpose, binding, issued))
