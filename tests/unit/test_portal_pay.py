"""The portal's mobile-money pages (captive_portal/routes/pay.py) over the real socket and
protocol to the real agent (tests/unit/real_agent.py) with hub_agent/purchases.py attached
as the daemon attaches it; the centre is played by the test: it answers with statuses and
a grant signed with the central key (hub_agent.payments.sign_grant)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from hub_agent.payments import Grant, sign_grant, verify_grant
from hub_agent.purchases import Purchases
from hub_agent.sessions.service import device_pseudonym
from hub_agent.sessions.vouchers import normalise_code
from hub_agent.signing import SigningKey
from tests.unit.real_agent import DEV2, MAC1, VOUCHER_SECRET, Hub, PortalClient, running_hub

_PAY_CSRF = re.compile(r'action="/pay">\s*<input type="hidden" name="csrf" value="([^"]+)"')
KEY = SigningKey.generate()


class Centre:
    """The centre as the hub sees it: what it sent, and the answers it gets."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        agent = hub.agent
        trust = hub.config.trust.model_copy(update={"central_public_key": KEY.public_b64})
        self.config = agent.service.config.model_copy(update={"trust": trust})
        self.shop: Purchases = agent.run(
            lambda: Purchases(agent.service.db, lambda: self.config, agent.service,
                              lambda: agent.kernel)
        )  # fmt: skip
        self.online = True
        self.shop.online = lambda: self.online
        agent.handler.purchases = self.shop

    def requests(self) -> list[dict[str, Any]]:
        now = self.hub.clock()
        return self.hub.agent.run(lambda: self.shop.due_requests(now))  # type: ignore[no-any-return]

    def status(self, rid: str, state: str, reason: str = "") -> None:
        msg = {"request_id": rid, "ref": "RL00AA", "state": state, "reason": reason}
        self.hub.agent.run(lambda: self.shop.on_status(msg, self.hub.clock()))

    def grant(self, req: dict[str, Any]) -> None:
        code = normalise_code(self.hub.agent.central(req["plan"]))
        assert code is not None
        g = sign_grant(KEY, Grant(
            hub_id=req["hub_id"], ref="RL00AA", request_id=req["request_id"], plan=req["plan"],
            device=req["device"], code=code, amount=500, currency="XOF", paid_at=self.hub.clock(),
        ))  # fmt: skip
        grant = verify_grant(g, KEY.public_b64, self.config.hub.id)
        assert self.hub.agent.run(lambda: self.shop.apply_grant(grant, self.hub.clock()))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as h:
        yield h


@pytest.fixture
def centre(hub: Hub) -> Centre:
    return Centre(hub)


def _pay(c: PortalClient, **data: str) -> Any:
    m = _PAY_CSRF.search(c.get("/").text)
    assert m, "no mobile-money form on the splash"
    form = {"plan": "jour", "phone": "+228 90 12 34 56", "network": "", "csrf": m.group(1)}
    return c.post("/pay", data={**form, **data})


def _ref(page: str) -> str:
    m = re.search(r"url=/pay/([A-Za-z0-9_-]+)", page)
    assert m, "no refresh to /pay/{ref}"
    return m.group(1)


def test_splash_offers_each_priced_plan_in_fcfa(hub: Hub, centre: Centre) -> None:
    page = unescape(hub.client().get("/").text)
    assert "Payer par mobile money" in page and "FCFA" in page
    assert 'name="network"' in page and "T-Money" in page and "Flooz" in page
    assert "<script" not in page and len(page.encode()) < 30 * 1024


def test_pay_waits_on_the_phone_then_shows_the_receipt_online(hub: Hub, centre: Centre) -> None:
    c = hub.client()
    r = _pay(c)
    assert r.status_code == 200 and 'http-equiv="refresh"' in r.text
    assert "Envoi de la demande" in unescape(r.text)
    ref = _ref(r.text)
    [req] = centre.requests()
    assert (req["request_id"], req["phone"], req["network"]) == (ref, "90123456", "tmoney")
    assert req["device"] == device_pseudonym(VOUCHER_SECRET.encode(), MAC1)
    centre.status(ref, "pending")
    page = unescape(c.get(f"/pay/{ref}").text)
    assert "Confirmez le paiement" in page and "T-Money" in page and "code secret" in page
    assert MAC1 not in hub.agent.kernel.grants
    centre.grant(req)
    assert MAC1 in hub.agent.kernel.grants
    r = c.get(f"/pay/{ref}?lang=en")
    page = unescape(r.text)
    assert r.status_code == 200 and "Payment received" in page and "RL00AA" in page
    assert "You are online" in page and "refresh" not in page
    assert hub.client(DEV2).get(f"/pay/{ref}").status_code == 404  # not another device's


@pytest.mark.parametrize(
    ("state", "reason", "text"),
    [
        ("failed", "cancelled", "refusé"),
        ("failed", "insufficient balance", "Solde insuffisant"),
        ("failed", "PayGate: invalid auth token", "ne répond pas"),
        ("expired", "expired", "délai"),
    ],
)
def test_failures_say_why_and_offer_vouchers(
    hub: Hub, centre: Centre, state: str, reason: str, text: str
) -> None:
    c = hub.client()
    ref = _ref(_pay(c, network="flooz").text)
    centre.status(ref, state, reason)
    r = c.get(f"/pay/{ref}")
    page = unescape(r.text)
    assert r.status_code == 409 and text in page and "ticket" in page and "Flooz" in page
    assert MAC1 not in hub.agent.kernel.grants


def test_no_answer_from_the_centre_says_so(hub: Hub, centre: Centre) -> None:
    c = hub.client()
    ref = _ref(_pay(c).text)
    hub.clock.now += 120
    page = unescape(c.get(f"/pay/{ref}").text)
    assert "indisponible" in page


def test_bad_number_is_refused_with_the_form_kept(hub: Hub, centre: Centre) -> None:
    r = _pay(hub.client(), phone="12 34")
    page = unescape(r.text)
    assert r.status_code == 400 and "Numéro non valide" in page and 'value="12 34"' in page


def test_hub_offline_hides_the_option_and_offers_vouchers(hub: Hub, centre: Centre) -> None:
    c = hub.client()
    m = _PAY_CSRF.search(c.get("/").text)
    assert m
    centre.online = False
    assert "Payer par mobile money" not in unescape(c.get("/").text)
    r = c.post("/pay", data={"plan": "jour", "phone": "90123456", "csrf": m.group(1)})
    page = unescape(r.text)
    assert r.status_code == 409 and "hors ligne" in page and 'name="code"' in page
    assert 'action="/pay"' not in page


def test_without_the_shop_the_option_is_hidden(hub: Hub) -> None:
    assert 'action="/pay"' not in hub.client().get("/").text


def test_pay_needs_the_csrf_token(hub: Hub, centre: Centre) -> None:
    r = hub.client().post("/pay", data={"plan": "jour", "phone": "90123456", "csrf": "x"})
    assert r.status_code == 403
