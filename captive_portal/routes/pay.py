"""Mobile money: ``POST /pay`` starts a purchase, ``GET /pay/{ref}`` follows it.

The splash offers it (``pay_offer``) only while the agent says mobile money works now
(the hub's broker link is up, the centre's key is known); otherwise the box is hidden and
the voucher form is what the page offers. The agent records the purchase and talks to
the centre; the portal only shows where it stands: a page that refreshes itself (no
JavaScript) while the phone is asked to confirm, then the receipt once the grant came, or
a plain message for a refusal, too little balance, an expired prompt, a provider or a
centre that did not answer.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse

from captive_portal.agent import UNAVAILABLE, DeviceState
from captive_portal.deps import ClientIp, LangDep, PortalDep
from captive_portal.forms import PostedForm
from captive_portal.i18n import Translator
from captive_portal.render import common_context, localised, session_facts, splash_context
from captive_portal.responses import html
from captive_portal.services import Portal
from hub_agent.api.protocol import Pay, PayStatus, PurchaseView
from hub_agent.purchases import plan_price, togo_phone
from hub_agent.sessions.vouchers import format_code

router = APIRouter()

REFRESH_S = 3
PAY_TIMEOUT_S = 6.0
WAITING = frozenset({"requested", "pending", "paid"})
NETWORK_NAMES = {"tmoney": "T-Money", "flooz": "Flooz"}


def fmt_xof(amount: int) -> str:
    return f"{amount:,}".replace(",", "\u202f") + " FCFA"


def _plans(portal: Portal, t: Translator) -> list[dict[str, str]]:
    cfg = portal.settings.config
    out = []
    for p in cfg.plans:
        price = plan_price(p)
        if price is not None:
            name = localised(p.name, t.lang, cfg.portal.default_language)
            out.append({"id": p.id, "name": name, "price": fmt_xof(price)})
    return out


async def pay_offer(
    portal: Portal,
    t: Translator,
    ip: str,
    phone: str = "",
    network: str = "",
    state: DeviceState | None = None,
) -> dict[str, Any] | None:
    """The splash's mobile-money box, or None when it is not offered now. ``state``: the
    device's (cached) state, which carries the offer when the agent gave it."""
    online = state.pay_online if state is not None else None
    if online is None and _plans(portal, t):
        online = bool((await portal.agent.ask(PayStatus(ip=ip))).pay_online)
    return known_offer(portal, t, ip, bool(online), phone, network)


def known_offer(
    portal: Portal, t: Translator, ip: str, online: bool, phone: str = "", network: str = ""
) -> dict[str, Any] | None:
    """``pay_offer`` once the agent said whether mobile money works now (``online``)."""
    plans = _plans(portal, t) if online else None
    if not plans:
        return None
    csrf = portal.csrf.issue("pay", ip)
    return {"plans": plans, "csrf": csrf, "phone": phone, "network": network}


async def _splash(
    portal: Portal, t: Translator, ip: str, error: str, status: int, phone: str = "",
    network: str = "",
) -> HTMLResponse:  # fmt: skip
    state = await portal.agent.whoami(ip)
    ctx = splash_context(
        portal.settings, t, state, csrf=portal.csrf.issue("login", ip), error=error
    )
    ctx["pay"] = await pay_offer(portal, t, ip, phone, network, state)
    return html(portal.renderer.page("splash.html", ctx), status_code=status)


def _purchase_context(portal: Portal, t: Translator, p: PurchaseView) -> dict[str, Any]:
    cfg = portal.settings.config
    plan = next((x for x in cfg.plans if x.id == p.plan_id), None)
    price = plan_price(plan) if plan is not None else None
    return {
        "p": p,
        "plan": localised(plan.name, t.lang, cfg.portal.default_language) if plan else p.plan_id,
        "price": fmt_xof(price) if price else "",
        "network": NETWORK_NAMES.get(p.network, p.network),
    }


def _wait_page(portal: Portal, t: Translator, p: PurchaseView) -> HTMLResponse:
    url = f"/pay/{p.ref}?" + urlencode({"lang": t.lang})
    ctx = {
        **common_context(portal.settings, t, f"/pay/{p.ref}", t("pay.wait_title")),
        **_purchase_context(portal, t, p),
        "refresh_s": REFRESH_S,
        "next_url": url,
    }
    return html(portal.renderer.page("pay_wait.html", ctx))


def _result_page(
    portal: Portal, t: Translator, p: PurchaseView, state: DeviceState
) -> HTMLResponse:
    session = state.session
    ok = p.state == "granted"
    if ok and p.login_error is None and session is not None:
        key = "pay.done"
    elif ok:
        key = "pay.done_enter_code"
    elif p.state == "failed":
        key = f"pay.failed_{p.reason or 'refused'}"
    else:
        key = f"pay.{p.state}"  # expired | mismatch | no_answer
    ctx = {
        **common_context(portal.settings, t, f"/pay/{p.ref}", t("pay.result_title")),
        **_purchase_context(portal, t, p),
        "ok": ok,
        "code": format_code(p.code) if p.code else "",
        "code_url": "/?" + urlencode({"lang": t.lang, "code": p.code or ""}),
        "message": t(key) if t(key) != key else t("pay.failed_refused"),
        "s": session_facts(session, t, portal.settings.config.portal.default_language)
        if ok and session is not None
        else None,
    }
    return html(portal.renderer.page("pay_result.html", ctx), status_code=200 if ok else 409)


@router.post("/pay", response_class=HTMLResponse, summary="Buy a plan by mobile money")
async def pay(
    form: PostedForm,
    plan: Annotated[str, Form(max_length=64)] = "",
    phone: Annotated[str, Form(max_length=32)] = "",
    network: Annotated[str, Form(max_length=16)] = "",
) -> HTMLResponse:
    portal, ip, t = form.portal, form.ip, form.t
    net = network if network in NETWORK_NAMES else ""
    if not form.signed("pay"):
        return await _splash(portal, t, ip, "csrf", 403, phone, net)
    try:
        togo_phone(phone)
    except ValueError:
        return await _splash(portal, t, ip, "pay_bad_phone", 400, phone, net)
    req = Pay(ip=ip, plan_id=plan, phone=phone, network=net or None)
    resp = await portal.agent.ask(req, timeout_s=PAY_TIMEOUT_S)
    if resp.error == UNAVAILABLE:
        return await _splash(portal, t, ip, UNAVAILABLE, 503, phone, net)
    if not resp.ok or resp.purchase is None:
        error = f"pay_{resp.error}" if resp.error else "generic"
        return await _splash(portal, t, ip, error, 409, phone, net)
    return _wait_page(portal, t, resp.purchase)


@router.get("/pay/{ref}", response_class=HTMLResponse, summary="A mobile-money purchase")
async def pay_status(portal: PortalDep, t: LangDep, ip: ClientIp, ref: str) -> HTMLResponse:
    resp = await portal.agent.ask(PayStatus(ip=ip, ref=ref[:64]))
    if resp.error == UNAVAILABLE:  # busy or restarting: nothing is lost, look again
        ctx = {
            **common_context(portal.settings, t, f"/pay/{ref}", t("pay.wait_title")),
            "refresh_s": REFRESH_S,
            "next_url": f"/pay/{ref[:64]}?" + urlencode({"lang": t.lang}),
        }
        return html(portal.renderer.page("wait.html", {**ctx, "code": "", "csrf": ""}))
    p = resp.purchase
    if not resp.ok or p is None:
        return await _splash(portal, t, ip, "pay_unknown_purchase", 404)
    if p.state in WAITING:
        return _wait_page(portal, t, p)
    return _result_page(portal, t, p, await portal.agent.whoami(ip))
