"""GET / : the splash page (plans, terms, voucher form, free tier, library link)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from captive_portal.deps import CaptiveDep, ClientIp, LangDep, PortalDep
from captive_portal.render import splash_context
from captive_portal.responses import html
from captive_portal.routes.pay import pay_offer

router = APIRouter()


@router.get("/", response_class=HTMLResponse, summary="Splash page")
async def splash(
    portal: PortalDep,
    t: LangDep,
    ip: ClientIp,
    state: CaptiveDep,
    code: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    csrf = portal.csrf.issue("login", ip)
    ctx = splash_context(portal.settings, t, state, csrf=csrf, code=code.strip())
    ctx["pay"] = await pay_offer(portal, t, ip, state=state)  # None: not offered now
    return html(portal.renderer.page("splash.html", ctx))
