"""Roaming balances: a central code's data follows it from hub to hub (pure parts).

At a login with a central code, a hub whose MQTT link is up asks the centre
(``relais/hubs/{hub_id}/balances/query``) and waits a short time for the answer
(``balances/answer``), signed with the central Ed25519 key the hub already trusts for
configs (``trust.central_public_key``)::

    query  {"request_id": str, "code": str, "plan_id": str, "ts": float}
    answer {"kind": "relais.balance.answer", "v": 1, "hub_id": str, "request_id": str,
            "code": str, "issued": bool, "bytes_elsewhere": int,
            "first_use": float | null, "used_at": [{"hub": str, "name": str, "bytes": int}],
            "at": float, "key_id": str, "sig": base64}

``bytes_elsewhere`` is what every *other* hub reported for the code (the asking hub's own
usage is its own sessions'); ``first_use`` the earliest first use anywhere (the time quota
runs from it). ``sig`` signs the canonical JSON of every other field, the hub id and the
request id included, so an answer cannot be replayed to another hub or another login.

``decide`` turns what the hub knows into the device slot's data cap on this hub:

* centre answered, code issued: cap = plan quota - bytes used elsewhere;
* centre answered, never issued: refused (``unknown_code``);
* no answer (link down, timeout): a bounded offline allowance, ``offline_share_pct`` of
  the plan quota, unless an earlier centre answer for this code is stored (then that one
  stands: its cap, or its refusal). Hopping between N offline hubs therefore gets at most
  N x share of the quota beyond the code's value; the centre finds and lists it when the
  hubs' usage reports arrive (``hubctl vouchers findings``).

Single-device codes (every plan in the base catalogue) are exact; for a code with several
device slots the elsewhere bytes are taken from each slot's quota here (conservative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature

from hub_agent.signing import SigningKey, b64, canonical, key_id, load_public, unb64

KIND = "relais.balance.answer"
VERSION = 1
Source = Literal["centre", "offline"]


class AnswerError(ValueError):
    """The answer is malformed, unsigned, signed by another key, tampered with, or for
    another hub or request."""


@dataclass(frozen=True)
class UsedAt:
    hub: str
    name: str
    bytes: int


@dataclass(frozen=True)
class Answer:
    hub_id: str
    request_id: str
    code: str
    issued: bool
    bytes_elsewhere: int
    first_use: float | None
    at: float
    used_at: tuple[UsedAt, ...] = field(default_factory=tuple)


def _body(a: Answer) -> dict[str, Any]:
    return {
        "kind": KIND,
        "v": VERSION,
        "hub_id": a.hub_id,
        "request_id": a.request_id,
        "code": a.code,
        "issued": a.issued,
        "bytes_elsewhere": a.bytes_elsewhere,
        "first_use": a.first_use,
        "used_at": [{"hub": u.hub, "name": u.name, "bytes": u.bytes} for u in a.used_at],
        "at": a.at,
    }


def sign_answer(key: SigningKey, answer: Answer) -> dict[str, Any]:
    """The centre's side: the payload of ``balances/answer``."""
    body = {**_body(answer), "key_id": key_id(key.public_b64)}
    return {**body, "sig": b64(key.sign(canonical(body)))}


def verify_answer(
    payload: Any, public_b64: str, hub_id: str, request_id: str | None = None
) -> Answer:
    """Check shape, key, signature, hub (and request); return the answer."""
    if not isinstance(payload, dict):
        raise AnswerError("answer is not a JSON object")
    if "sig" not in payload:
        raise AnswerError("answer is not signed")
    body = {k: v for k, v in payload.items() if k != "sig"}
    try:
        trusted = key_id(public_b64)
    except ValueError:
        raise AnswerError("bad public key") from None
    if body.get("key_id") != trusted:
        raise AnswerError("signed by an unknown key")
    try:
        load_public(public_b64).verify(unb64(str(payload["sig"])), canonical(body))
    except (InvalidSignature, ValueError):
        raise AnswerError("bad signature") from None
    if body.get("kind") != KIND or body.get("v") != VERSION:
        raise AnswerError("not a balance answer")
    if body.get("hub_id") != hub_id:
        raise AnswerError(f"answer is for hub {body.get('hub_id')!r}, not {hub_id!r}")
    if request_id is not None and body.get("request_id") != request_id:
        raise AnswerError("answer to another request")
    try:
        first = body["first_use"]
        return Answer(
            hub_id=hub_id,
            request_id=str(body["request_id"]),
            code=str(body["code"]),
            issued=bool(body["issued"]),
            bytes_elsewhere=max(0, int(body["bytes_elsewhere"])),
            first_use=None if first is None else float(first),
            at=float(body["at"]),
            used_at=tuple(
                UsedAt(str(u["hub"]), str(u.get("name") or u["hub"]), int(u["bytes"]))
                for u in body["used_at"]
            ),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise AnswerError(f"malformed answer: {e}") from None


# --- what a login gets ---------------------------------------------------------------------
@dataclass(frozen=True)
class Known:
    """What the hub stored from an earlier decision for the code."""

    source: Source
    issued: bool | None  # None: the centre never answered for it
    bytes_elsewhere: int
    cap_bytes: int | None


@dataclass(frozen=True)
class Decision:
    code: str
    source: Source
    issued: bool | None
    bytes_elsewhere: int
    cap_bytes: int | None  # the slot's data cap on this hub (None: the plan's, unlimited)
    first_use: float | None = None
    used_at: tuple[UsedAt, ...] = ()
    error: str | None = None  # a LoginError: the login is refused

    @property
    def offline(self) -> bool:
        return self.source == "offline"


def offline_allowance(quota_bytes: int | None, share_pct: int) -> int | None:
    """The share of a plan quota a hub grants without the centre (None: unlimited plan,
    nothing to bound by data)."""
    if quota_bytes is None:
        return None
    return quota_bytes * max(0, min(100, share_pct)) // 100


def decide(
    code: str,
    quota_bytes: int | None,
    answer: Answer | None,
    known: Known | None,
    share_pct: int,
) -> Decision:
    """The slot's cap on this hub from the centre's answer, or, without one, from what is
    known (an earlier answer) or the offline allowance."""
    if answer is not None:
        if not answer.issued:
            return Decision(code, "centre", False, 0, 0, error="unknown_code")
        left = None if quota_bytes is None else max(0, quota_bytes - answer.bytes_elsewhere)
        return Decision(
            code, "centre", True, answer.bytes_elsewhere, left, answer.first_use, answer.used_at,
            error="used_up" if left == 0 else None,
        )  # fmt: skip
    if known is not None and known.source == "centre":
        if known.issued is False:
            return Decision(code, "centre", False, 0, 0, error="unknown_code")
        return Decision(code, "centre", known.issued, known.bytes_elsewhere, known.cap_bytes)
    cap = offline_allowance(quota_bytes, share_pct)
    return Decision(code, "offline", None if known is None else known.issued, 0, cap,
                    error="used_up" if cap == 0 else None)  # fmt: skip


@dataclass(frozen=True)
class Asked:
    """What a login (or a reconcile) brings from the loop to the login's transaction:
    the code, its plan quota here, and the centre's verified answer (None: none came)."""

    code: str
    quota_bytes: int | None
    answer: Answer | None
    share_pct: int


def capped(quota_bytes: int | None, cap_bytes: int | None) -> int | None:
    if cap_bytes is None:
        return quota_bytes
    return cap_bytes if quota_bytes is None else min(quota_bytes, cap_bytes)


def balance_topic(hub_id: str, leaf: Literal["query", "answer"]) -> str:
    return f"relais/hubs/{hub_id}/balances/{leaf}"
