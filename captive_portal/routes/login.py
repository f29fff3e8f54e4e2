"""POST /login: voucher, free tier or account (RADIUS); the status page on success, the
splash with a localised error (form kept, never the password) otherwise.

Wrong codes are counted by the agent, per device (MAC) and in its database (it says
``retry_after`` / ``attempts_left``); the portal counts nothing, so its restarts and a new
DHCP address change nothing, and a busy or failing agent never counts as a wrong code.
A login the agent did not answer in time may still go through behind the silence: the
person gets a page that says "un instant…" and checks again by itself (``/login/wait``),
never an error; sending the same code again is the same login."""

from __future__ import annotations

import math
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from captive_portal.agent import UNAVAILABLE, DeviceState, active_session
from captive_portal.deps import ClientIp, DeviceDep, LangDep, PortalDep
from captive_portal.extend import extend_box
from captive_portal.forms import PostedForm
from captive_portal.i18n import Translator
from captive_portal.render import common_context, splash_context, status_context
from captive_portal.responses import html, redirect
from captive_portal.services import Portal
from hub_agent.api.protocol import Login, SessionView

router = APIRouter()

MAX_CODE = 64
LOGIN_TIMEOUT_S = 8.0  # a login may wait behind a kernel change on a slow box
WAIT_REFRESH_S = 3
WAIT_ROUNDS = 40  # ~2 min (a crowd on a small box is slow), then the form again
# Refusals about the input itself: they do not count against the device's attempts.
_STATUS = {
    "csrf": 403,
    "rate_limited": 429,
    UNAVAILABLE: 503,
    "blocked": 403,
    "internal": 503,
    "radius_unavailable": 503,
}


def _login_timeout(portal: Portal, method: str) -> float:
    """An account login waits for the AAA servers in turn (each 1 + retries tries)."""
    radius = portal.settings.config.radius
    if method != "account" or radius is None:
        return LOGIN_TIMEOUT_S
    servers = [s for s in (radius.primary, radius.secondary) if s is not None]
    return LOGIN_TIMEOUT_S + sum(s.timeout_s * (1 + s.retries) for s in servers)


def _error_page(
    portal: Portal,
    t: Translator,
    ip: str,
    state: DeviceState | None,
    error: str,
    code: str = "",
    retry_after: int = 0,
    attempts_left: int | None = None,
    username: str = "",
    typo_position: int | None = None,
) -> HTMLResponse:
    lock_s = portal.settings.config.portal.lockout_seconds
    if error == "rate_limited" and not retry_after:
        retry_after = lock_s
    # this wrong code was the one too many: the device is locked from now on
    now_locked = bool(retry_after) and error not in _STATUS
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
    ctx["username"] = username
    extra = []  # said in the error's own notice
    if typo_position is not None:
        g, k = divmod(typo_position - 1, 4)
        extra.append(t("error.typo_at", n=typo_position, g=g + 1, k=k + 1))
    if now_locked:
        extra.append(t("error.now_locked", minutes=max(1, math.ceil(retry_after / 60))))
    elif attempts_left is not None:  # warn before the lock
        extra.append(t("error.attempts_left", n=attempts_left, minutes=max(1, lock_s // 60)))
    if extra:
        notice = ctx["notices"][0]
        ctx["notices"][0] = type(notice)(notice.kind, " ".join([notice.text, *extra]))
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    status = 429 if now_locked else _STATUS.get(error, 400)
    body = portal.renderer.page("splash.html", ctx)
    return html(body, status_code=status, headers=headers)


@router.post("/login", response_class=HTMLResponse, summary="Log in with a voucher or free tier")
async def login(
    form: PostedForm,
    method: Annotated[str, Form(max_length=16)] = "",
    code: Annotated[str, Form(max_length=200)] = "",
    username: Annotated[str, Form(max_length=253)] = "",
    password: Annotated[str, Form(max_length=128)] = "",
    terms: Annotated[str, Form(max_length=8)] = "",
) -> HTMLResponse:
    portal, ip, t = form.portal, form.ip, form.t
    code = code.strip()[:MAX_CODE]
    if not form.signed("login"):
        return _error_page(portal, t, ip, None, "csrf", code)
    if method not in portal.settings.config.portal.login_methods:
        return _error_page(portal, t, ip, None, "method_disabled", code)
    if method == "free" and not terms:
        return _error_page(portal, t, ip, None, "terms_required", code)
    if method == "voucher" and not code:
        return _error_page(portal, t, ip, None, "code_missing", code)
    username = username.strip()
    if method == "account" and not (username and password):
        return _error_page(portal, t, ip, None, "account_missing", username=username)

    if method == "account":  # the password goes to the agent only, never to a log
        req = Login(ip=ip, method="account", username=username, password=password)
    else:
        req = Login(ip=ip, method="free" if method == "free" else "voucher", code=code or None)
    resp = await portal.agent.ask(req, timeout_s=_login_timeout(portal, method))
    if resp.error == UNAVAILABLE:  # silent, not "no": it may have gone through
        return _wait_page(portal, t, ip, 1, code if method == "voucher" else "")
    state = DeviceState(True, resp.device, resp.uplink_up)
    session = active_session(resp.device)
    if resp.ok and session is None:  # the agent said yes without a view: ask once more
        portal.agent.devices.forget(ip)
        state = await portal.agent.whoami(ip)
        session = state.session
    elif resp.ok:  # the device's probes and pages see it at once, without asking again
        portal.agent.remember(ip, state, resp.generation)
    if not resp.ok or session is None:
        error = resp.error or "generic"
        return _error_page(
            portal, t, ip, state, error, code, resp.retry_after or 0, resp.attempts_left,
            username if method == "account" else "", resp.typo_position,
        )  # fmt: skip
    return await _status_page(portal, t, ip, state, session)


async def _status_page(
    portal: Portal, t: Translator, ip: str, state: DeviceState, session: SessionView
) -> HTMLResponse:
    ctx = status_context(
        portal.settings,
        t,
        state,
        session,
        csrf=portal.csrf.issue("logout", ip),
        just_logged_in=True,
    )
    ctx["pay"] = await extend_box(portal, t, ip, state)  # "prolonger", or None
    return html(portal.renderer.page("status.html", ctx))


def _wait_page(portal: Portal, t: Translator, ip: str, round_: int, code: str) -> HTMLResponse:
    ctx = {
        **common_context(portal.settings, t, "/login/wait", t("wait.title")),
        "refresh_s": WAIT_REFRESH_S,
        "next_url": "/login/wait?" + urlencode({"n": round_, "lang": t.lang}),
        "code": code,
        "csrf": portal.csrf.issue("login", ip),
    }
    return html(portal.renderer.page("wait.html", ctx))


@router.get("/login/wait", response_class=HTMLResponse, summary="A login still under way")
async def login_wait(
    portal: PortalDep, t: LangDep, ip: ClientIp, state: DeviceDep, n: int = 1
) -> HTMLResponse:
    """Where the "un instant…" page refreshes to: the status page once the agent says the
    device is through, the same page while it is silent, the splash when it gave up."""
    session = state.session
    if session is not None:
        return await _status_page(portal, t, ip, state, session)
    if (not state.available or state.stale) and 0 < n < WAIT_ROUNDS:
        return _wait_page(portal, t, ip, n + 1, "")
    error = UNAVAILABLE if not state.available else "generic"
    return _error_page(portal, t, ip, state, error)


@router.get("/login", summary="A bookmarked or reloaded login: back to the splash page")
async def login_page() -> RedirectResponse:
    return redirect("/", 303)
