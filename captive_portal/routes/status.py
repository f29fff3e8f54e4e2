"""GET /status (the device's own session) and POST /logout."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

from captive_portal.agent import UNAVAILABLE, DeviceState
from captive_portal.deps import ClientIp, DeviceDep, LangDep, PortalDep
from captive_portal.extend import extend_box
from captive_portal.forms import PostedForm, page_route
from captive_portal.render import splash_context, status_context
from captive_portal.responses import html, redirect
from hub_agent.api.protocol import Logout

router = APIRouter()


@page_route(router.get, "/status", "The device's session",
            {303: "not logged in: back to the splash page"})  # fmt: skip
async def status(
    portal: PortalDep, t: LangDep, ip: ClientIp, state: DeviceDep
) -> HTMLResponse | RedirectResponse:
    session = state.session
    if session is None:
        return redirect(f"/?{urlencode({'lang': t.lang})}", 303)
    ctx = status_context(portal.settings, t, state, session, csrf=portal.csrf.issue("logout", ip))
    ctx["pay"] = await extend_box(portal, t, ip, state)  # "prolonger", or None
    return html(portal.renderer.page("status.html", ctx))


@page_route(router.post, "/logout", "End the device's session",
            {303: "logged out: back to the splash page"})  # fmt: skip
async def logout(form: PostedForm) -> HTMLResponse | RedirectResponse:
    portal, ip, t = form.portal, form.ip, form.t
    error = None
    state: DeviceState | None = None
    if not form.signed("logout"):
        error, status_code = "csrf", 403
    else:
        resp = await portal.agent.ask(Logout(ip=ip))
        portal.agent.devices.forget(ip)  # the next page asks the agent again
        if resp.error == UNAVAILABLE:
            error, status_code, state = UNAVAILABLE, 503, DeviceState(False, None, None)
        else:  # "no session" is fine: the device is logged out either way
            return redirect(f"/?{urlencode({'lang': t.lang})}", 303)
    ctx = splash_context(
        portal.settings, t, state, csrf=portal.csrf.issue("login", ip), error=error
    )
    return html(portal.renderer.page("splash.html", ctx), status_code=status_code)
