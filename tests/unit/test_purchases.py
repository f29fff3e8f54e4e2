"""Mobile money on the hub (hub_agent/purchases.py): requests recorded and re-sent until
the centre answers, status shown, a verified grant applied once per ref through the normal
login path (one transaction with the kernel change), a kernel failure leaving nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_agent.api.protocol import Pay, PayStatus
from hub_agent.enforce.model import Grant as KernelGrant
from hub_agent.payments import Grant, sign_grant, verify_grant
from hub_agent.purchases import (
    GIVE_UP_S,
    RESEND_S,
    Purchases,
    guess_network,
    plan_price,
    public_reason,
    togo_phone,
)
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService, device_pseudonym
from hub_agent.sessions.vouchers import make_central_code, month_index
from hub_agent.signing import SigningKey
from tests.unit.test_sessions_service import SECRET, T0, make_config

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
IP_A = "10.42.0.100"
KEY = SigningKey.generate()


class Kernel:
    def __init__(self) -> None:
        self.authorized: dict[str, KernelGrant] = {}
        self.fail = False

    def authorize(self, grant: KernelGrant) -> None:
        if self.fail:
            raise RuntimeError("nft said no")
        self.authorized[grant.mac] = grant

    def deauthorize(self, mac: str) -> None:
        self.authorized.pop(mac, None)


class Shop:
    def __init__(self, tmp: Path) -> None:
        data = make_config(tmp).model_dump(mode="json")
        data["trust"] = {"central_public_key": KEY.public_b64, "voucher_secret": SECRET}
        from hub_agent.config import validate_config

        self.config = validate_config(data)
        self.db = open_sessions_db(tmp / "hub.db")
        self.sessions = SessionService(self.config, self.db)
        self.kernel = Kernel()
        self.events: list[tuple[str, dict[str, object]]] = []
        self.p = Purchases(
            self.db, lambda: self.config, self.sessions, lambda: self.kernel,
            lambda t, **f: self.events.append((t, f)),
        )  # fmt: skip
        self.p.online = lambda: True
        self.woken = 0

        def wake() -> None:
            self.woken += 1

        self.p.wake = wake

    def grant(self, rid: str, mac: str = A, ref: str = "RL0001", serial: int = 1) -> Grant:
        code = make_central_code(SECRET.encode(), "jour", month_index(T0), serial)
        msg = sign_grant(KEY, Grant(
            hub_id=self.config.hub.id, ref=ref, request_id=rid, plan="jour",
            device=device_pseudonym(SECRET.encode(), mac), code=code, amount=500,
            currency="XOF", paid_at=T0,
        ))  # fmt: skip
        return verify_grant(msg, KEY.public_b64, self.config.hub.id)


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return Shop(tmp_path)


def _pay(shop: Shop, mac: str | None = A, phone: str = "+228 90 12 34 56", at: float = T0):
    return shop.p.pay(Pay(ip=IP_A, plan_id="jour", phone=phone), mac, at)


def test_pure_helpers() -> None:
    assert togo_phone("+228 90 12 34 56") == togo_phone("90.12.34.56") == "90123456"
    with pytest.raises(ValueError):
        togo_phone("+229 90 12 34 56")
    assert (guess_network("90123456"), guess_network("99123456")) == ("tmoney", "flooz")
    assert public_reason("failed", "cancelled") == "refused"
    assert public_reason("failed", "insufficient balance") == "insufficient_funds"
    assert public_reason("failed", "PayGate: invalid auth token") == "provider_unavailable"
    assert public_reason("expired", "expired") is None


def test_plan_price_prefers_price_xof(shop: Shop) -> None:
    jour = shop.config.plan("jour")
    assert plan_price(jour) == int("".join(c for c in jour.price_label if c.isdigit()))
    assert plan_price(jour.model_copy(update={"price_xof": 750})) == 750


def test_request_is_recorded_then_resent_until_the_centre_answers(shop: Shop) -> None:
    r = _pay(shop)
    assert r.ok and r.purchase is not None and r.purchase.state == "requested"
    assert r.purchase.network == "tmoney" and "34" not in r.purchase.phone
    rid = r.purchase.ref
    assert shop.woken == 1
    assert _pay(shop, at=T0 + 1).purchase.ref == rid  # a 2nd tap
    [sent] = shop.p.due_requests(T0)
    assert sent["request_id"] == rid and sent["phone"] == "90123456"
    assert sent["device"] == device_pseudonym(SECRET.encode(), A)
    assert shop.p.due_requests(T0 + 1) == []  # not yet
    assert len(shop.p.due_requests(T0 + RESEND_S)) == 1
    shop.p.on_status({"request_id": rid, "ref": "RL0001", "state": "pending"}, T0 + 6)
    assert shop.p.due_requests(T0 + 20) == []  # answered: no more
    v = shop.p.status(PayStatus(ip=IP_A, ref=rid), A, T0 + 7).purchase
    assert v is not None and (v.state, v.receipt) == ("pending", "RL0001")
    # another device cannot read it
    assert shop.p.status(PayStatus(ip="10.42.0.101", ref=rid), B, T0 + 7).error == (
        "unknown_purchase"
    )


def test_no_answer_stops_asking_and_says_so(shop: Shop) -> None:
    rid = _pay(shop).purchase.ref
    assert shop.p.due_requests(T0 + GIVE_UP_S + 1) == []
    v = shop.p.status(PayStatus(ip=IP_A, ref=rid), A, T0 + GIVE_UP_S + 1).purchase
    assert v is not None and v.state == "no_answer"


def test_refusals_offline_and_failed_status(shop: Shop) -> None:
    assert _pay(shop, phone="12345").error == "bad_phone"
    assert _pay(shop, mac=None).error == "unknown_device"
    assert shop.p.pay(Pay(ip=IP_A, plan_id="nope", phone="90123456"), A, T0).error == (
        "unknown_plan"
    )
    shop.p.online = lambda: False
    r = _pay(shop)
    assert (r.error, r.pay_online) == ("hub_offline", False)
    assert shop.p.status(PayStatus(ip=IP_A), A, T0).pay_online is False
    shop.p.online = lambda: True
    rid = _pay(shop).purchase.ref
    shop.p.on_status({"request_id": rid, "ref": "RL2", "state": "failed",
                      "reason": "cancelled"}, T0 + 5)  # fmt: skip
    v = shop.p.status(PayStatus(ip=IP_A, ref=rid), A, T0 + 6).purchase
    assert v is not None and (v.state, v.reason, v.code) == ("failed", "refused", None)
    assert shop.kernel.authorized == {}


def test_grant_logs_the_device_in_once_per_ref(shop: Shop) -> None:
    rid = _pay(shop).purchase.ref
    g = shop.grant(rid)
    assert shop.p.apply_grant(g, T0 + 30)
    assert A in shop.kernel.authorized
    view = shop.sessions.session_view(A, T0 + 31)
    assert view is not None and view.plan_id == "jour"
    v = shop.p.status(PayStatus(ip=IP_A, ref=rid), A, T0 + 31).purchase
    assert v is not None and (v.state, v.receipt, v.code) == ("granted", "RL0001", g.code)
    # the same grant again (QoS 1, re-sent until acked, after a kill -9): acked, not re-applied
    shop.kernel.authorized.clear()
    assert shop.p.apply_grant(g, T0 + 60)
    assert shop.kernel.authorized == {}
    assert [e for e, _ in shop.events] == ["device_authorised"]
    n = shop.db.execute("SELECT count(*) FROM redemptions").fetchone()[0]
    assert n == 1


def test_kernel_failure_applies_nothing_and_the_resend_applies_it(shop: Shop) -> None:
    rid = _pay(shop).purchase.ref
    g = shop.grant(rid)
    shop.kernel.fail = True
    with pytest.raises(RuntimeError):
        shop.p.apply_grant(g, T0 + 30)
    assert shop.db.execute("SELECT count(*) FROM purchase_grants").fetchone()[0] == 0
    assert shop.sessions.grant_for(A, T0 + 31) is None
    shop.kernel.fail = False
    assert shop.p.apply_grant(g, T0 + 60) and A in shop.kernel.authorized


def test_grant_for_another_device_or_unknown_request_is_acked_not_applied(shop: Shop) -> None:
    rid = _pay(shop).purchase.ref
    assert shop.p.apply_grant(shop.grant(rid, mac=B, ref="RLX"), T0 + 30)
    assert shop.p.apply_grant(shop.grant("nosuchrequest", ref="RLY", serial=2), T0 + 30)
    assert shop.kernel.authorized == {}


def test_a_refusal_stored_before_the_payment_does_not_cap_the_buyer(shop: Shop) -> None:
    """Someone tried the purchase's code here before it was paid: the centre answered "not
    issued", stored with a cap of 0. The grant (the centre's word that it is paid) replaces
    that refusal: the buyer gets the whole plan."""
    from hub_agent.roaming import Decision
    from hub_agent.sessions import roaming as sroaming

    rid = _pay(shop).purchase.ref
    g = shop.grant(rid)
    sroaming.record(shop.db.conn, Decision(g.code, "centre", False, 0, 0, error="unknown_code"), T0)
    assert shop.p.apply_grant(g, T0 + 30)
    granted = shop.kernel.authorized[A]
    assert granted.quota_bytes is None or granted.quota_bytes > 0
    k = sroaming.known(shop.db.conn, g.code)
    assert k is not None and k.issued is True and k.cap_bytes is None
