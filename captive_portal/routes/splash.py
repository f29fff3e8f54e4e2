"""GET / : the splash page (plans, terms, voucher form, free tier, library link)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from captive_portal.agent import DeviceState
from captive_portal.deps import CaptiveDep, ClientIp, LangDep, PortalDep
from captive_portal.i18n import Translator
from captive_portal.responses import html
from captive_portal.routes.pay import pay_offer
from captive_portal.services import Portal

router = APIRouter()

CODE_MAX = 64  # a voucher code given in the link (?code=), as the form takes it


async def splash_page(
    portal: Portal, t: Translator, ip: str, state: DeviceState, code: str = ""
) -> HTMLResponse:
    """The splash for this device (the route's and captive_portal.fastpath's answer)."""
    # None: not offered now (known from the state already: no need to list the plans)
    offer = None if state.pay_online is False else await pay_offer(portal, t, ip, state=state)
    csrf = portal.csrf.issue("login", ip)
    body = portal.splash.page(
        portal.renderer, portal.settings, t, state, offer, csrf=csrf, code=code.strip()
    )
    return html(body)


@router.get("/", response_class=HTMLResponse, summary="Splash page")
async def splash(
    portal: PortalDep,
    t: LangDep,
    ip: ClientIp,
    state: CaptiveDep,
    code: Annotated[str, Query(max_length=CODE_MAX)] = "",
) -> HTMLResponse:
    return await splash_page(portal, t, ip, state, code)
