"""The payment state machine, held as data, and the pure decisions around it.

States (``payments.state``)::

    new ──accepted──▶ pending ──paid──▶ paid ──granted──▶ granted ──acked──▶ delivered
     │  ──refused──▶ failed    │ ──declined──▶ failed
     │  ──gave_up──▶ pending   │ ──expired/timed_out──▶ expired
                               │ ──wrong_amount──▶ mismatch

``new``: our reference and the voucher code are on disk, the provider may or may not
have heard of it (a crash or a timeout there is ambiguous). ``gave_up``: the start kept
failing for START_WINDOW_S; the payment is then polled like any pending one until it
expires, so a request that did reach the provider is never lost. The provider's status
is the truth: a late "paid" after ``failed`` or ``expired`` still moves to ``paid`` (the
money was taken; the phone gets what it paid for), found by polling or ``reconcile``.
Nothing leaves ``paid``/``granted``/``delivered``/``mismatch`` except forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from provisioning.payments.base import ProviderStatus

State = Literal["new", "pending", "paid", "granted", "delivered", "failed", "expired", "mismatch"]
Event = Literal[
    "accepted",
    "refused",
    "gave_up",
    "paid",
    "wrong_amount",
    "declined",
    "expired",
    "timed_out",
    "granted",
    "acked",
]

TRANSITIONS: dict[tuple[State, Event], State] = {
    ("new", "accepted"): "pending",
    ("new", "refused"): "failed",
    ("new", "gave_up"): "pending",
    ("new", "paid"): "paid",  # a status check while new (after an ambiguous start)
    ("new", "wrong_amount"): "mismatch",
    ("pending", "paid"): "paid",
    ("pending", "wrong_amount"): "mismatch",
    ("pending", "declined"): "failed",
    ("pending", "expired"): "expired",
    ("pending", "timed_out"): "expired",
    ("failed", "paid"): "paid",  # late truth from the provider wins
    ("failed", "wrong_amount"): "mismatch",
    ("expired", "paid"): "paid",
    ("expired", "wrong_amount"): "mismatch",
    ("paid", "granted"): "granted",
    ("granted", "acked"): "delivered",
}
TERMINAL: frozenset[State] = frozenset({"delivered", "mismatch"})
# States a status check may still change (polled, or re-checked by reconcile).
OPEN: frozenset[State] = frozenset({"new", "pending"})

START_WINDOW_S = 60.0  # keep retrying the start this long, then poll instead
EXPIRE_AFTER_S = 15 * 60.0  # a USSD prompt is long dead by then
FAST_PHASE_S = 60.0  # poll every FAST_EVERY_S at first: most phones confirm within a minute
FAST_EVERY_S = 3.0
BACKOFF_FIRST_S = 6.0
BACKOFF_MAX_S = 120.0
GRANT_RESEND_S = 30.0  # re-send an unacknowledged grant this often
LATE_CHECK_S = 24 * 3600.0  # expired/failed ones are re-checked by reconcile this long


class TransitionError(ValueError):
    pass


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise TransitionError(f"no transition from {state} on {event}") from None


def allowed(state: State, event: Event) -> bool:
    return (state, event) in TRANSITIONS


def next_check_delay(age_s: float, checks: int, fast_every_s: float = FAST_EVERY_S) -> float:
    """Seconds until the next status check of a payment ``age_s`` old that was checked
    ``checks`` times: every 3 s in the first minute, then doubling up to 2 minutes."""
    if age_s < FAST_PHASE_S:
        return fast_every_s
    slow = max(0, checks - int(FAST_PHASE_S / fast_every_s))
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(slow, 10)))


def start_retry_delay(attempts: int) -> float:
    """After a failed start attempt: 2, 4, 8, ... seconds (the window bounds them)."""
    return float(min(30, 2 ** max(1, attempts)))


@dataclass(frozen=True)
class Expected:
    ref: str
    amount: int
    currency: str = "XOF"


def event_for(expected: Expected, status: ProviderStatus) -> Event | None:
    """What a provider status means for our payment; None: nothing new (still pending).

    A "paid" only counts as ``paid`` when the amount (when the provider states it), the
    currency and the reference are exactly those we asked; anything else is
    ``wrong_amount`` (no access; ops refund or settle it)."""
    if status.outcome == "pending":
        return None
    if status.outcome == "failed":
        return "declined"
    if status.outcome == "expired":
        return "expired"
    if status.ref is not None and status.ref != expected.ref:
        return "wrong_amount"
    if status.currency is not None and status.currency != expected.currency:
        return "wrong_amount"
    if status.amount is not None and status.amount != expected.amount:
        return "wrong_amount"
    return "paid"


def timed_out(age_s: float, expire_after_s: float = EXPIRE_AFTER_S) -> bool:
    return age_s >= expire_after_s
