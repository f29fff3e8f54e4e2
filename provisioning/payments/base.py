"""The one small interface every mobile-money provider module implements.

A provider starts a payment under OUR reference (created and stored before the call),
tells its status, and turns an incoming callback into either a verified status or a mere
hint to re-check. Lower-level errors (httpx, JSON) are translated here, at the boundary,
into three exceptions the service understands: ``ProviderUnavailable`` (try again: the
call may or may not have reached the provider), ``ProviderRefused`` (a definitive no) and
``CallbackRejected`` (a callback that must not be believed).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

Network = Literal["tmoney", "flooz"]
NETWORKS: tuple[Network, ...] = ("tmoney", "flooz")
Outcome = Literal["paid", "pending", "failed", "expired"]


class ProviderError(RuntimeError):
    pass


class ProviderUnavailable(ProviderError):
    """Timeout, connection error, 5xx, unreadable answer: the outcome is unknown."""


class ProviderRefused(ProviderError):
    """The provider said no for good (bad token, bad parameters, unknown number...)."""


class CallbackRejected(ProviderError):
    """A callback that is forged, stale, malformed or not ours."""


@dataclass(frozen=True)
class StartRequest:
    ref: str  # ours: PayGate ``identifier``, FedaPay ``merchant_reference``
    amount: int  # whole XOF
    phone: str  # normalised: 8 local digits
    network: Network
    description: str  # carries the voucher code: the operator's SMS shows it


@dataclass(frozen=True)
class StartResult:
    provider_ref: str | None  # PayGate tx_reference, FedaPay transaction id
    note: str = ""


@dataclass(frozen=True)
class ProviderStatus:
    outcome: Outcome
    ref: str | None = None  # our reference as the provider echoes it, when it does
    amount: int | None = None  # what was actually paid, when the provider says
    currency: str | None = None
    provider_ref: str | None = None
    payment_reference: str | None = None  # the operator's receipt number
    method: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Callback:
    """What a callback says. ``status`` None: only a hint, re-check with ``status()``."""

    ref: str | None
    provider_ref: str | None
    status: ProviderStatus | None


RecordRef = Callable[[str], None]


class Provider(Protocol):
    name: str

    def start(self, req: StartRequest, known_ref: str | None, record_ref: RecordRef) -> StartResult:
        """Ask the phone to pay. ``known_ref``: the provider reference recorded by an
        earlier attempt (resume, do not create again); ``record_ref`` is called with a
        new provider reference as soon as there is one, before any further call."""
        ...

    def status(self, ref: str, provider_ref: str | None) -> ProviderStatus: ...

    def parse_callback(self, headers: Mapping[str, str], body: bytes, now: float) -> Callback: ...


def local_phone(phone: str) -> str:
    """Togolese mobile number as 8 digits (``+228``/``00228`` optional, spaces ignored)."""
    digits = re.sub(r"[\s.\-()]", "", phone)
    for prefix in ("+228", "00228"):
        if digits.startswith(prefix):
            digits = digits[len(prefix) :]
    if not re.fullmatch(r"[79]\d{7}", digits):
        raise ValueError(f"not a Togolese mobile number: {phone!r}")
    return digits


def guess_network(phone: str) -> Network:
    """The network from the prefix: Moov (Flooz) 96-99, 78-79; Togocom (T-Money/Mixx)
    90-93, 70-72. The phone may change it on the form (numbers move between networks)."""
    two = local_phone(phone)[:2]
    return "flooz" if two in {"94", "95", "96", "97", "98", "99", "78", "79"} else "tmoney"


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Map httpx and JSON errors into ProviderUnavailable in one place."""
    try:
        yield
    except httpx.TimeoutException:
        raise ProviderUnavailable(f"{what}: timed out") from None
    except httpx.HTTPError as e:
        raise ProviderUnavailable(f"{what}: {type(e).__name__}: {e}") from None
    except ValueError as e:  # json.JSONDecodeError included
        raise ProviderUnavailable(f"{what}: unreadable answer ({e})") from None


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The answer's JSON object; 5xx → unavailable, other non-2xx → refused."""
    if response.status_code >= 500:
        raise ProviderUnavailable(f"{what}: HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        detail = data.get("message") if isinstance(data, dict) else None
        raise ProviderRefused(f"{what}: HTTP {response.status_code} {detail or ''}".strip())
    if not isinstance(data, dict):
        raise ProviderUnavailable(f"{what}: answer is not a JSON object")
    return data


def call_json(
    method: str,
    url: str,
    body: Mapping[str, Any] | None,
    what: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One call to a provider: ``body`` sent as JSON, its JSON object back, every error
    mapped (``translated``, ``json_object``). ``what`` names the call in those errors."""
    with translated(what):
        r = http_client().request(method, url, json=body, headers=headers, timeout=timeout_s)
        return json_object(r, what)


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def http_client() -> httpx.Client:
    """The process's one HTTP client (thread-safe, keeps connections open). A new client
    per call costs tens of ms of CPU (its TLS context; 75 ms on the loaded lab box): with
    20 payments polled every 3 s and a callback each, that was most of the centre's CPU
    and seconds of paid-to-online (bench/bench_paid_to_online.py)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client()
        return _client


def callback_json(body: bytes, what: str) -> Any:
    """A callback's body decoded, or CallbackRejected("<what>: not JSON")."""
    try:
        return json.loads(body)
    except ValueError:
        raise CallbackRejected(f"{what}: not JSON") from None


def as_int(value: Any) -> int | None:
    """Providers send amounts as numbers or numeric strings; None when absent/garbled."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f == int(f) else None
