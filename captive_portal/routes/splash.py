"""GET / : the splash page (plans, terms, voucher form, free tier, library link)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from captive_portal.agent import DeviceState
from captive_portal.deps import CaptiveDep, ClientIp, LangDep, PortalDep
from captive_portal.i18n import Translator
from captive_portal.responses import html
from captive_portal.routes.pay import known_offer, pay_offer
from captive_portal.services import Portal

router = APIRouter()

CODE_MAX = 64  # a voucher code given in the link (?code=), as the form takes it


async def splash_page(
    portal: Portal, t: Translator, ip: str, state: DeviceState, code: str = ""
) -> HTMLResponse:
    """The splash for this device (the route's and captive_portal.fastpath's answer)."""
    body = splash_known(portal, t, ip, state, code)
    if body is None:  # the agent did not say whether mobile money works now: ask it
        offer = await pay_offer(portal, t, ip, state=state)
        body = _filled(portal, t, ip, state, offer, code)
    return html(body)


def splash_known(
    portal: Portal, t: Translator, ip: str, state: DeviceState, code: str = ""
) -> bytes | None:
    """The splash's bytes when the state says whether mobile money is offered, else None."""
    if state.pay_online is None:
        return None
    return _filled(portal, t, ip, state, known_offer(portal, t, ip, state.pay_online), code)


def _filled(
    portal: Portal, t: Translator, ip: str, state: DeviceState, offer: dict[str, Any] | None,
    code: str,
) -> bytes:  # fmt: skip
    csrf = portal.csrf.issue("login", ip)
    return portal.splash.page(
        portal.renderer, portal.settings, t, state, offer, csrf=csrf, code=code.strip()
    )


@router.get("/", response_class=HTMLResponse, summary="Splash page")
async def splash(
    portal: PortalDep,
    t: LangDep,
    ip: ClientIp,
    state: CaptiveDep,
    code: Annotated[str, Query(max_length=CODE_MAX)] = "",
) -> HTMLResponse:
    return await splash_page(portal, t, ip, state, code)
