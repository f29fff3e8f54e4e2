"""Voucher codes: short, unambiguous, checked, and (for central codes) verifiable offline.

A code is 12 symbols from a 31-letter alphabet without 0/O, 1/I/L (case, spaces and dashes
are ignored on entry) shown as ``XXXX-XXXX-XXXX``. The last symbol is a check symbol:
weights 1..12 modulo the prime 31, so every single wrong symbol and every swap of two
neighbours is caught before any lookup (reported as ``unknown_code``).

The 11 payload symbols (31**11, about 2**54.5) hold either

* a **hub-local** code: random, stored in the hub's database when the caretaker issues it;
* a **central** code: ``(mac, serial, month, tag)`` in mixed radix, where ``tag`` is 3 bits
  of a hash of the plan id (a hint, so the hub tries only the plans that match), ``month``
  is the last month the code may be redeemed in (months since 2025-01, 8 bits: until 2046),
  ``serial`` is unique per (plan, month) (18 bits: 262,144 codes) and ``mac`` is
  HMAC-SHA256 under the deployment's voucher secret over (plan id, month, serial),
  truncated to the remaining ~25.5 bits. The MAC binds the full plan id, so the plan is
  recovered from a code by the one configured plan whose MAC verifies.

Trade-off: a 25-bit MAC means one guess in ~47 million passes; the portal's per-device
login rate limit and the centre's reconciliation (which reports redemptions of serials that
were never issued) bound what guessing can win. An Ed25519 signature (64 bytes) would not
fit in a code anyone can type on a phone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
BASE = len(ALPHABET)  # 31, a prime: the weighted check symbol catches any single error
CODE_LEN = 12
PAYLOAD_LEN = CODE_LEN - 1
PAYLOAD_SPACE: int = BASE**PAYLOAD_LEN

TAGS = 8
MONTHS = 256
SERIALS = 1 << 18
MAC_SPACE: int = PAYLOAD_SPACE // (SERIALS * MONTHS * TAGS)
EPOCH_YEAR = 2025
_DOMAIN = b"relais-voucher-v1"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def _check_symbol(digits: list[int]) -> int:
    # sum((i+1) * d_i) over all 12 symbols must be 0 mod 31; solve for the 12th.
    partial = sum((i + 1) * d for i, d in enumerate(digits)) % BASE
    inv12 = pow(CODE_LEN, -1, BASE)
    return (-partial * inv12) % BASE


def _encode(payload: int) -> str:
    if not 0 <= payload < PAYLOAD_SPACE:
        raise ValueError("payload out of range")
    digits = []
    for _ in range(PAYLOAD_LEN):
        payload, d = divmod(payload, BASE)
        digits.append(d)
    digits.reverse()
    digits.append(_check_symbol(digits))
    return "".join(ALPHABET[d] for d in digits)


def normalise_code(text: str) -> str | None:
    """The 12 canonical symbols, or None when the text cannot be a code (wrong length,
    a letter outside the alphabet, or a failed check symbol)."""
    s = "".join(text.split()).replace("-", "").upper()
    if len(s) != CODE_LEN or any(c not in _INDEX for c in s):
        return None
    if sum((i + 1) * _INDEX[c] for i, c in enumerate(s)) % BASE:
        return None
    return s


# Which character a person may have typed for which (both ways): look-alikes on a printed
# ticket (2/Z, 5/S, 8/B ...) and neighbours on a phone's AZERTY keyboard and digit row.
_LOOK_ALIKE = "2Z 5S 6G 8B 38 UV VY MN MW CG EF PR KX 7T 4A 9G QD VW"
_KEYS = ("AZERTYU", "QSDFGHJK", "WXCVBN", "23456789")
_CONFUSED: dict[str, frozenset[str]] = {
    c: frozenset(
        [p[1] for p in _LOOK_ALIKE.split() if p[0] == c]
        + [p[0] for p in _LOOK_ALIKE.split() if p[1] == c]
        + [r[i + d] for r in _KEYS for i, k in enumerate(r) if k == c for d in (-1, 1)
           if 0 <= i + d < len(r)]
    )
    for c in ALPHABET
}  # fmt: skip


def typo_position(text: str, known: tuple[str, ...] | list[str] = ()) -> int | None:
    """The 1-based position (in the 12 symbols, dashes not counted) of the one character
    worth re-reading in a code that failed its check, or None when it cannot be told.

    A single weighted check symbol says *that* a symbol is wrong, not *which*: for every
    position exactly one other symbol would make the check pass. So the position comes
    only from what does not reveal whether any code exists:

    1. a single symbol outside the alphabet (0, O, 1, I, L, punctuation): that one;
    2. ``known``: codes this device already logged in with (it knows them already),
       one symbol away: that symbol;
    3. otherwise, the one position (if only one) where the symbol that passes the check is
       a likely slip for the typed one (a look-alike or a keyboard neighbour).

    It never consults the codes the hub has issued: answering "n° 7" because the hub
    knows the corrected code would tell a guesser that code exists (12 guesses per try).
    Case 3 is a good guess, not a certainty: the page says "vérifiez", not "corrigez".
    """
    s = "".join(text.split()).replace("-", "").upper()
    if len(s) != CODE_LEN:
        return None
    outside = [i for i, c in enumerate(s) if c not in _INDEX]
    if outside:
        return outside[0] + 1 if len(outside) == 1 else None
    digits = [_INDEX[c] for c in s]
    syndrome = sum((i + 1) * d for i, d in enumerate(digits)) % BASE
    if syndrome == 0:
        return None  # the check passes: nothing to locate
    for k in known:
        diff = [i for i, (a, b) in enumerate(zip(s, k, strict=False)) if a != b]
        if len(k) == CODE_LEN and len(diff) == 1:
            return diff[0] + 1
    likely = [
        p
        for p in range(CODE_LEN)
        if ALPHABET[(digits[p] - syndrome * pow(p + 1, -1, BASE)) % BASE] in _CONFUSED[s[p]]
    ]
    return likely[0] + 1 if len(likely) == 1 else None


def payload_of(code: str) -> int:
    value = 0
    for c in code[:PAYLOAD_LEN]:
        value = value * BASE + _INDEX[c]
    return value


def format_code(code: str) -> str:
    """``XXXX-XXXX-XXXX`` for printing and reading aloud."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def new_local_code() -> str:
    return _encode(secrets.randbelow(PAYLOAD_SPACE))


def plan_tag(plan_id: str) -> int:
    return hashlib.sha256(plan_id.encode()).digest()[0] % TAGS


def month_index(ts: float, tz: str = "Africa/Lome") -> int:
    d = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return (d.year - EPOCH_YEAR) * 12 + d.month - 1


def month_end(index: int, tz: str = "Africa/Lome") -> float:
    """The instant the month after ``index`` begins (local time): the code's expiry."""
    year, month = divmod(index + 1, 12)
    return datetime(EPOCH_YEAR + year, month + 1, 1, tzinfo=ZoneInfo(tz)).timestamp()


def _mac(secret: bytes, plan_id: str, month: int, serial: int) -> int:
    msg = b"\0".join([_DOMAIN, plan_id.encode(), str(month).encode(), str(serial).encode()])
    digest = hmac.new(secret, msg, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % MAC_SPACE


@dataclass(frozen=True)
class CentralCode:
    code: str
    plan_id: str
    serial: int
    month: int  # last month of validity (months since 2025-01)

    def expires_at(self, tz: str = "Africa/Lome") -> float:
        return month_end(self.month, tz)


def make_central_code(secret: bytes, plan_id: str, month: int, serial: int) -> str:
    if not 0 <= month < MONTHS:
        raise ValueError(f"month: {month} outside 0..{MONTHS - 1} (2025-01 .. 2046-04)")
    if not 0 <= serial < SERIALS:
        raise ValueError(f"serial: {serial} outside 0..{SERIALS - 1}")
    mac = _mac(secret, plan_id, month, serial)
    payload = ((mac * SERIALS + serial) * MONTHS + month) * TAGS + plan_tag(plan_id)
    return _encode(payload)


def verify_central_code(
    secret: bytes, code: str, plan_ids: list[str] | tuple[str, ...]
) -> CentralCode | None:
    """The central code's fields if its MAC verifies for one of ``plan_ids``, else None.

    ``code`` must already be normalised. Needs no database and no network."""
    rest, tag = divmod(payload_of(code), TAGS)
    rest, month = divmod(rest, MONTHS)
    mac, serial = divmod(rest, SERIALS)
    for plan_id in plan_ids:
        if plan_tag(plan_id) != tag:
            continue
        if hmac.compare_digest(
            mac.to_bytes(8, "big"), _mac(secret, plan_id, month, serial).to_bytes(8, "big")
        ):
            return CentralCode(code, plan_id, serial, month)
    return None
