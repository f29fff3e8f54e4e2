"""Mobile money on the hub: a phone buys a plan; the centre, holding the provider keys,
starts the payment and, once paid, sends a signed grant (docs/operations.md, payments).

The hub's side, on the agent's worker thread (its one SQLite connection and the kernel):

- ``pay``: the portal's ``Pay``. The purchase is written to ``purchases`` (keyed by a
  random ``request_id``, the centre's idempotency key) *before* anything is sent; the
  table is the purchase's outbox: ``due_requests`` hands the request to the MQTT side
  (purchase_link.py) again every ``RESEND_S`` until the centre's first ``status`` for it
  arrives, for at most ``GIVE_UP_S`` (then the page says the service did not answer).
- ``on_status``: the centre's unsigned progress (pending, paid, failed, expired,
  mismatch), shown on ``/pay/{ref}``; never gives access.
- ``apply_grant``: a grant already verified (``hub_agent.payments.verify_grant``) logs the
  buyer's device in with the grant's code through the normal login path, in ONE
  transaction with the row of ``purchase_grants`` keyed by the centre's ``ref``: applied
  at most once whatever the number of copies, and a kill -9 before the commit leaves it
  unapplied (the centre re-sends until acknowledged). Returns whether to acknowledge.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import sqlite_utils

from hub_agent.api.protocol import Network, Pay, PayStatus, PurchaseView, Response, SessionView
from hub_agent.config import HubConfig, Plan
from hub_agent.enforce.model import Grant as KernelGrant
from hub_agent.payments import Grant, request_payload
from hub_agent.roaming import Decision
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.interface import Sessions
from hub_agent.sessions.service import device_pseudonym
from hub_agent.store import Migrations, transaction

log = logging.getLogger(__name__)

PURCHASES = Migrations("purchases")
RESEND_S = 5.0  # the request goes again this often until the centre answers
GIVE_UP_S = 90.0  # no answer from the centre by then: stop asking, say so
OPEN_PER_DEVICE = 3  # purchases a device may have waiting at once
OPEN_STATES = ("requested", "pending", "paid")
_ALLOWED_FROM = {  # centre status -> the local states it may replace
    "pending": ("requested",),
    "paid": ("requested", "pending", "failed", "expired"),
    "failed": ("requested", "pending"),
    "expired": ("requested", "pending"),
    "mismatch": ("requested", "pending", "paid", "failed", "expired"),
}
_REF_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@PURCHASES
def m001_purchases(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE purchases ("
        " request_id TEXT PRIMARY KEY, mac TEXT NOT NULL, ip TEXT, plan_id TEXT NOT NULL,"
        " phone TEXT NOT NULL, network TEXT NOT NULL, created_at REAL NOT NULL,"
        " sent_at REAL, sends INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,"
        " reason TEXT, ref TEXT, status_at REAL, code TEXT, login_error TEXT)"
    )
    db.execute("CREATE INDEX purchases_mac ON purchases(mac, created_at)")
    # One row per grant applied (the centre's ref): the at-most-once guard.
    db.execute(
        "CREATE TABLE purchase_grants (ref TEXT PRIMARY KEY, request_id TEXT NOT NULL,"
        " applied_at REAL NOT NULL, outcome TEXT NOT NULL)"
    )


# --- pure helpers (the portal uses them too) ----------------------------------------------
def togo_phone(text: str) -> str:
    """A Togolese mobile number as 8 digits (+228 / 00228 optional, spaces ignored);
    ValueError otherwise."""
    digits = re.sub(r"[\s.\-()]", "", text)
    for prefix in ("+228", "00228"):
        if digits.startswith(prefix):
            digits = digits[len(prefix) :]
    if not re.fullmatch(r"[79]\d{7}", digits):
        raise ValueError("not a Togolese mobile number")
    return digits


def guess_network(phone: str) -> Network:
    """Moov Africa (Flooz) 94-99 and 78-79, Togocom (T-Money) otherwise (90-93, 70-72);
    the person may change it (numbers move between networks)."""
    two = togo_phone(phone)[:2]
    return "flooz" if two in {"94", "95", "96", "97", "98", "99", "78", "79"} else "tmoney"


def mask_phone(phone: str) -> str:
    return f"{phone[:2]} •• •• {phone[-2:]}" if len(phone) == 8 else "••"


def plan_price(plan: Plan) -> int | None:
    """Whole FCFA: ``price_xof``, else the number in ``price_label`` ("100 FCFA"), as the
    centre reads it (the centre's own price is what is charged)."""
    if plan.price_xof is not None:
        return plan.price_xof
    digits = re.sub(r"[\s\u202f.]", "", plan.price_label)
    m = re.match(r"^(\d+)(FCFA|XOF|F)?$", digits, re.IGNORECASE)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


def public_reason(state: str, reason: str) -> str | None:
    """The centre's free-text reason -> what the page explains."""
    if state != "failed":
        return None
    r = reason.lower()
    if any(w in r for w in ("insufficient", "balance", "solde", "funds", "fonds")):
        return "insufficient_funds"
    if r.startswith("phone:"):
        return "bad_phone"
    if r.startswith("plan:"):
        return "not_sold"
    words = ("unavailable", "timeout", "timed out", "http 5", "unreachable", "token",
             "parameters", "not offered")  # fmt: skip
    if any(w in r for w in words):
        return "provider_unavailable"
    return "refused"


def _forget_refusal(conn: sqlite3.Connection, code: str, now: float) -> None:
    """The grant is the centre's word that ``code`` is paid. A "not issued" the centre
    answered when someone tried the code before the payment (the balance desk refuses an
    unpaid purchase's code) is stored here and would cap the buyer's slot at 0: replace
    it by the paid code's full plan."""
    k = sroaming.known(conn, code)
    if k is not None and k.issued is False:
        sroaming.record(conn, Decision(code, "centre", True, 0, None), now)


# --- the service ------------------------------------------------------------------------
class Kernel(Protocol):
    def authorize(self, grant: KernelGrant) -> None: ...
    def deauthorize(self, mac: str) -> None: ...


@dataclass
class _Row:
    request_id: str
    mac: str
    ip: str | None
    plan_id: str
    phone: str
    network: str
    created_at: float
    sent_at: float | None
    sends: int
    state: str
    reason: str | None
    ref: str | None
    status_at: float | None
    code: str | None
    login_error: str | None


_COLS = ", ".join(_Row.__dataclass_fields__)


class Purchases:
    def __init__(
        self,
        db: sqlite_utils.Database,
        config: Callable[[], HubConfig],
        sessions: Sessions,
        kernel: Callable[[], Kernel],
        on_event: Callable[..., None] = lambda *a, **k: None,
    ) -> None:
        PURCHASES.apply(db)
        self.db = db
        self.config = config
        self.sessions = sessions
        self.kernel = kernel
        self.on_event = on_event
        self.online: Callable[[], bool] = lambda: False  # the broker link (purchase_link)
        self.wake: Callable[[], None] = lambda: None  # a new request to send

    # --- what is offered ------------------------------------------------------------------
    def offered(self) -> bool:
        cfg = self.config()
        return (
            self.online()
            and cfg.trust.central_public_key is not None
            and cfg.trust.voucher_secret is not None
            and "voucher" in cfg.portal.login_methods
            and any(plan_price(p) for p in cfg.plans)
        )

    # --- the portal's requests (worker thread) --------------------------------------------
    def pay(self, req: Pay, mac: str | None, now: float) -> Response:
        if mac is None:
            return Response(ok=False, error="unknown_device")
        if not self.offered():
            return Response(ok=False, error="hub_offline", pay_online=False)
        try:
            plan = self.config().plan(req.plan_id)
        except KeyError:
            return Response(ok=False, error="unknown_plan", pay_online=True)
        if plan_price(plan) is None:
            return Response(ok=False, error="unknown_plan", pay_online=True)
        try:
            phone = togo_phone(req.phone)
        except ValueError:
            return Response(ok=False, error="bad_phone", pay_online=True)
        network = req.network or guess_network(phone)
        with transaction(self.db):
            same = self._rows(
                "mac = ? AND plan_id = ? AND phone = ? AND network = ? AND state = 'requested'"
                " AND created_at > ? ORDER BY created_at DESC LIMIT 1",
                [mac, plan.id, phone, network, now - GIVE_UP_S],
            )
            if same:  # a second tap on the button: the same purchase
                return self._answer(same[0], now)
            marks = ",".join("?" * len(OPEN_STATES))
            busy = self._rows(
                f"mac = ? AND state IN ({marks}) AND created_at > ?",
                [mac, *OPEN_STATES, now - 15 * 60],
            )
            if len([r for r in busy if self._state(r, now) != "no_answer"]) >= OPEN_PER_DEVICE:
                return Response(ok=False, error="rate_limited", pay_online=True)
            rid = secrets.token_urlsafe(12)
            self.db.execute(
                "INSERT INTO purchases (request_id, mac, ip, plan_id, phone, network,"
                " created_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'requested')",
                [rid, mac, req.ip, plan.id, phone, network, now],
            )
        log.info("purchase %s: %s for %s on %s", rid, plan.id, mac, network)
        self.wake()
        row = self._row(rid)
        assert row is not None
        return self._answer(row, now)

    def status(self, req: PayStatus, mac: str | None, now: float) -> Response:
        if req.ref is None:
            return Response(ok=True, pay_online=self.offered())
        row = self._row(req.ref) if _REF_RE.match(req.ref) else None
        if row is None or mac is None or row.mac != mac:
            return Response(ok=False, error="unknown_purchase", pay_online=self.offered())
        if req.ip != row.ip:  # a new DHCP address: the grant's login uses the latest
            self.db.execute(
                "UPDATE purchases SET ip = ? WHERE request_id = ?", [req.ip, row.request_id]
            )
        return self._answer(row, now)

    def _answer(self, row: _Row, now: float) -> Response:
        return Response(ok=True, purchase=self.view(row, now), pay_online=self.offered())

    def _state(self, row: _Row, now: float) -> str:
        if row.state == "requested" and row.status_at is None and now - row.created_at > GIVE_UP_S:
            return "no_answer"
        return row.state

    def view(self, row: _Row, now: float) -> PurchaseView:
        state = self._state(row, now)
        return PurchaseView(
            ref=row.request_id,
            plan_id=row.plan_id,
            phone=mask_phone(row.phone),
            network=row.network,
            state=state,
            reason=public_reason(state, row.reason or ""),
            receipt=row.ref,
            code=row.code if state == "granted" else None,
            login_error=row.login_error,
            created_at=row.created_at,
        )

    # --- towards the centre (worker thread, called by purchase_link) ---------------------
    def due_requests(self, now: float) -> list[dict[str, Any]]:
        """Request payloads to publish now; each is marked sent. A request goes again
        every RESEND_S until the centre answered, for GIVE_UP_S at most."""
        cfg = self.config()
        secret = cfg.trust.voucher_secret
        if secret is None:
            return []
        rows = self._rows(
            "state = 'requested' AND status_at IS NULL AND created_at > ?"
            " AND (sent_at IS NULL OR sent_at <= ?) ORDER BY created_at",
            [now - GIVE_UP_S, now - RESEND_S],
        )
        out = []
        for r in rows:
            device = device_pseudonym(secret.get_secret_value().encode(), r.mac)
            out.append(request_payload(cfg.hub.id, r.request_id, r.plan_id, r.phone,
                                       r.network, device, r.created_at))  # fmt: skip
        if rows:
            with transaction(self.db):
                for r in rows:
                    self.db.execute(
                        "UPDATE purchases SET sent_at = ?, sends = sends + 1 WHERE request_id = ?",
                        [now, r.request_id],
                    )
        return out

    def on_status(self, msg: Mapping[str, Any], now: float) -> bool:
        """The centre's ``payments/status``; True when it changed the purchase."""
        rid, state = str(msg.get("request_id") or ""), str(msg.get("state") or "")
        allowed = _ALLOWED_FROM.get(state)
        row = self._row(rid) if _REF_RE.match(rid) else None
        if row is None or allowed is None:
            return False
        ref = msg.get("ref")
        with transaction(self.db):
            self.db.execute(
                "UPDATE purchases SET status_at = ?, ref = coalesce(ref, ?) WHERE request_id = ?",
                [now, str(ref) if ref else None, rid],
            )
            marks = ",".join("?" * len(allowed))
            cur = self.db.execute(
                f"UPDATE purchases SET state = ?, reason = ? WHERE request_id = ?"
                f" AND state IN ({marks})",
                [state, str(msg.get("reason") or ""), rid, *allowed],
            )
        return bool(cur.rowcount)

    def apply_grant(self, grant: Grant, now: float) -> bool:
        """Log the buyer's device in with the grant's code, once per ``grant.ref``; True:
        acknowledge it (applied now or before, or a grant this hub cannot place)."""
        before: KernelGrant | None = None
        mac: str | None = None
        try:
            with transaction(self.db):
                done = self.db.execute(
                    "SELECT 1 FROM purchase_grants WHERE ref = ?", [grant.ref]
                ).fetchone()
                if done:
                    log.info("grant %s already applied: acknowledged again", grant.ref)
                    return True
                row = self._row(grant.request_id)
                secret = self.config().trust.voucher_secret
                outcome = "unknown_request"
                view: SessionView | None = None
                if row is not None and secret is not None:
                    own = device_pseudonym(secret.get_secret_value().encode(), row.mac)
                    outcome = "other_device" if own != grant.device else ""
                if row is not None and not outcome:
                    mac = row.mac
                    _forget_refusal(self.db.conn, grant.code, now)
                    before = self.sessions.grant_for(mac, now)
                    view, error = self.sessions.login(
                        mac, row.ip or "", "voucher", grant.code, now,
                        enforce=self.kernel().authorize,
                    )  # fmt: skip
                    outcome = error or "applied"
                    self.db.execute(
                        "UPDATE purchases SET state = 'granted', ref = ?, code = ?,"
                        " login_error = ?, status_at = coalesce(status_at, ?)"
                        " WHERE request_id = ?",
                        [grant.ref, grant.code, error, now, row.request_id],
                    )
                self.db.execute(
                    "INSERT INTO purchase_grants (ref, request_id, applied_at, outcome)"
                    " VALUES (?, ?, ?, ?)",
                    [grant.ref, grant.request_id, now, outcome],
                )
        except Exception:
            if mac is not None:
                self._restore(mac, before)
            raise
        log.info("grant %s (purchase %s): %s", grant.ref, grant.request_id, outcome)
        if view is not None and mac is not None:
            self.on_event("device_authorised", mac=mac, plan=view.plan_id, method="mobile_money")
        return True

    def _restore(self, mac: str, grant: KernelGrant | None) -> None:
        """After a failed apply, the kernel as the (rolled back) database says."""
        try:
            if grant is None:
                self.kernel().deauthorize(mac)
            else:
                self.kernel().authorize(grant)
        except Exception:  # the next reconcile repairs what this could not
            log.exception("restoring %s after a failed grant", mac)

    # --- rows -----------------------------------------------------------------------------
    def _rows(self, where: str, params: list[object]) -> list[_Row]:
        cur = self.db.execute(f"SELECT {_COLS} FROM purchases WHERE {where}", params)
        return [_Row(*r) for r in cur.fetchall()]

    def _row(self, request_id: str) -> _Row | None:
        rows = self._rows("request_id = ?", [request_id])
        return rows[0] if rows else None
