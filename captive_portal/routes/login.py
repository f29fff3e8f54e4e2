"""POST /login: voucher or free tier; the status page on success, the splash with a
localised error (form kept) otherwise. Failed attempts lock the device out for a while."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from captive_portal.agent import UNAVAILABLE, DeviceState, active_session
from captive_portal.deps import ClientIp, PortalDep, translator_for
from captive_portal.i18n import Translator
from captive_portal.render import splash_context, status_context
from captive_portal.responses import html, redirect
from captive_portal.services import Portal
from hub_agent.api.protocol import Login

router = APIRouter()

MAX_CODE = 64
# Refusals about the input itself: they do not count against the device's attempts.
_STATUS = {
    "csrf": 403,
    "rate_limited": 429,
    UNAVAILABLE: 503,
    "blocked": 403,
    "internal": 503,
}


def _error_page(
    portal: Portal,
    t: Translator,
    ip: str,
    state: DeviceState | None,
    error: str,
    code: str = "",
    retry_after: int = 0,
) -> HTMLResponse:
    if error == "rate_limited" and not retry_after:  # the agent's own limiter said so
        retry_after = portal.settings.config.portal.lockout_seconds
    params = {"minutes": max(1, math.ceil(retry_after / 60))} if retry_after else None
    ctx = splash_context(
        portal.settings,
        t,
        state,
        csrf=portal.csrf.issue("login", ip),
        code=code,
        error=error,
        error_params=params,
    )
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    body = portal.renderer.page("splash.html", ctx)
    return html(body, status_code=_STATUS.get(error, 400), headers=headers)


@router.post("/login", response_class=HTMLResponse, summary="Log in with a voucher or free tier")
async def login(
    request: Request,
    portal: PortalDep,
    ip: ClientIp,
    method: Annotated[str, Form(max_length=16)] = "",
    code: Annotated[str, Form(max_length=200)] = "",
    terms: Annotated[str, Form(max_length=8)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    lang: Annotated[str, Form(max_length=16)] = "",
) -> HTMLResponse:
    t = translator_for(portal, request, lang or None)
    code = code.strip()[:MAX_CODE]
    retry = portal.login_lockout.retry_after(ip)
    if retry:
        return _error_page(portal, t, ip, None, "rate_limited", code, retry)
    if not portal.csrf.check(csrf, "login", ip):
        return _error_page(portal, t, ip, None, "csrf", code)
    if method not in portal.settings.config.portal.login_methods:
        return _error_page(portal, t, ip, None, "method_disabled", code)
    if method == "free" and not terms:
        return _error_page(portal, t, ip, None, "terms_required", code)
    if method == "voucher" and not code:
        return _error_page(portal, t, ip, None, "code_missing", code)

    resp = await portal.agent.ask(
        Login(ip=ip, method="free" if method == "free" else "voucher", code=code or None)
    )
    if resp.error == UNAVAILABLE:
        return _error_page(portal, t, ip, DeviceState(False, None, None), UNAVAILABLE, code)
    state = DeviceState(True, resp.device, resp.uplink_up)
    session = active_session(resp.device)
    if resp.ok and session is None:  # the agent said yes without a view: ask once more
        state = await portal.agent.whoami(ip)
        session = state.session
    if not resp.ok or session is None:
        portal.login_lockout.fail(ip)
        error = resp.error or "generic"
        return _error_page(portal, t, ip, state, error, code)
    portal.login_lockout.succeed(ip)
    ctx = status_context(
        portal.settings,
        t,
        state,
        session,
        csrf=portal.csrf.issue("logout", ip),
        just_logged_in=True,
    )
    return html(portal.renderer.page("status.html", ctx))


@router.get("/login", summary="A bookmarked or reloaded login: back to the splash page")
async def login_page() -> RedirectResponse:
    return redirect("/", 303)
