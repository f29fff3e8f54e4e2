"""/admin: the caretaker's dashboard. Password login (scrypt), an HttpOnly SameSite=Strict
session cookie, CSRF on every form, login attempts locked out per IP."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.types import DecoratedCallable as Route

from captive_portal import dashboard as board
from captive_portal.agent import UNAVAILABLE
from captive_portal.deps import (
    ADMIN_COOKIE,
    AdminSession,
    ClientIp,
    LangDep,
    PortalDep,
)
from captive_portal.forms import Posted, PostedForm, page_route
from captive_portal.i18n import Translator
from captive_portal.phone import contact_context
from captive_portal.render import localised, quota_rows
from captive_portal.responses import html, redirect
from captive_portal.security import verify_password
from captive_portal.services import Portal
from hub_agent.api.protocol import (
    Block,
    CaretakerInfo,
    Disconnect,
    Health,
    IssueVouchers,
    ListDevices,
    NameDevice,
)
from hub_agent.api.protocol import Request as AgentRequest
from hub_agent.config import normalise_mac
from hub_agent.sessions.vouchers import format_code
from provisioning.voucher_sheet import Card, default_portal_url, hub_cards, render_sheet

router = APIRouter(prefix="/admin")

FLASH = frozenset(
    {"disconnected", "blocked", "unblocked", "bad_mac", "failed", "unavailable", "bad_plan",
     "named", "own_hub"}
)  # fmt: skip
MAX_VOUCHERS_AT_ONCE = 50


def _base(portal: Portal, t: Translator, title: str) -> dict[str, Any]:
    return {
        "lang": t.lang,
        "t": t,
        "title": title,
        "hub_name": portal.settings.config.hub.name,
        "kind_label": t(f"kind.{portal.settings.config.hub.kind}"),
        "lang_q": f"?{urlencode({'lang': t.lang})}",
        "contact": contact_context(portal.settings.config, t),
    }


def _login_page(
    portal: Portal, t: Translator, ip: str, error: str | None, status_code: int
) -> HTMLResponse:
    ctx = {
        **_base(portal, t, t("admin.login_title")),
        "csrf": portal.csrf.issue("admin-login", ip),
        "error": t(f"admin.error.{error}") if error else None,
        "disabled": portal.settings.admin_hash is None,
    }
    return html(portal.renderer.page("admin_login.html", ctx), status_code=status_code)


def _back(t: Translator, flash: str) -> RedirectResponse:
    return redirect(f"/admin?{urlencode({'lang': t.lang, 'msg': flash})}", 303)


@page_route(router.get, "", "Caretaker dashboard (login required)",
            {401: "login form", 404: "admin disabled"})  # fmt: skip
async def dashboard(
    portal: PortalDep,
    t: LangDep,
    ip: ClientIp,
    sid: AdminSession,
    msg: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    if portal.settings.admin_hash is None:
        return _login_page(portal, t, ip, None, 404)
    if sid is None:
        return _login_page(portal, t, ip, None, 401)
    devices_r, health_r, desk_r = await asyncio.gather(
        portal.agent.ask(ListDevices()),
        portal.agent.ask(Health()),
        portal.agent.ask(CaretakerInfo()),
    )
    config = portal.settings.config
    default = config.portal.default_language
    view = desk_r.caretaker  # None from an agent without it: names, sales, chart left out
    now = view.now if view else time.time()
    devices, blocked, more = board.device_rows(devices_r.devices or [], view, config, t, now)
    internet, internet_ok = board.internet_line(health_r.health, view, config, t)
    ctx = {
        **_base(portal, t, t("admin.title")),
        "csrf": portal.csrf.issue("admin", sid),
        "flash": t(f"admin.flash.{msg}") if msg in FLASH else None,
        "unavailable": devices_r.error == UNAVAILABLE or health_r.error == UNAVAILABLE,
        "internet": internet,
        "internet_ok": internet_ok,
        "devices": devices,
        "blocked": blocked,
        "more_devices": more,
        "health": board.health_rows(health_r.health, t, config) if health_r.health else [],
        "chart": board.chart_context(view, t),
        "sales_days": board.sales_rows(view.sales_days, view.currency, t) if view else [],
        "sales_months": board.sales_rows(view.sales_months, view.currency, t) if view else [],
        "quotas": quota_rows(config, t),
        "plans": [(p.id, localised(p.name, t.lang, default)) for p in config.plans],
        "max_vouchers": MAX_VOUCHERS_AT_ONCE,
    }
    return html(portal.renderer.page("admin.html", ctx))


@page_route(router.post, "/login", "Caretaker login", {303: "logged in: to the dashboard"})
async def admin_login(
    request: Request, form: PostedForm, password: Annotated[str, Form(max_length=256)] = ""
) -> HTMLResponse | RedirectResponse:
    portal, ip, t = form.portal, form.ip, form.t
    stored = portal.settings.admin_hash
    if stored is None:
        return _login_page(portal, t, ip, None, 404)
    if portal.admin_lockout.retry_after(ip):
        return _login_page(portal, t, ip, "rate_limited", 429)
    if not form.signed("admin-login"):
        return _login_page(portal, t, ip, "csrf", 403)
    # scrypt is deliberately slow: keep it off the event loop.
    if not password or not await asyncio.to_thread(verify_password, password, stored):
        portal.admin_lockout.fail(ip)
        return _login_page(portal, t, ip, "bad_password", 401)
    portal.admin_lockout.succeed(ip)
    resp = redirect(f"/admin?{urlencode({'lang': t.lang})}", 303)
    resp.set_cookie(
        ADMIN_COOKIE,
        portal.admin_sessions.open(),
        max_age=portal.admin_sessions.ttl_s,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return resp


@dataclass(frozen=True, slots=True)
class Caretaker:
    """A form the caretaker posted from the dashboard: who sent it, and what it carries."""

    form: Posted
    sid: str | None

    @property
    def portal(self) -> Portal:
        return self.form.portal

    def refusal(self) -> str | None:
        """None when the caretaker's session and form token are good, else the refusal."""
        if self.sid is None:
            return "login"
        if not self.form.signed("admin", self.sid):
            return "csrf"
        return None

    def refused(self, why: str) -> HTMLResponse:
        login = why == "login"
        return _login_page(
            self.portal, self.form.t, self.form.ip, None if login else why, 401 if login else 403
        )


def get_caretaker(form: PostedForm, sid: AdminSession) -> Caretaker:
    return Caretaker(form, sid)


CaretakerForm = Annotated[Caretaker, Depends(get_caretaker)]
MacField = Annotated[str, Form(max_length=32)]


def _action(path: str, summary: str, after: str = "done") -> Callable[[Route], Route]:
    """A caretaker's form: the login page when refused, else 303 back to the dashboard."""
    return page_route(router.post, path, summary, {303: f"{after}: back to the dashboard"})


@router.post("/logout", summary="Caretaker logout", status_code=303)
async def admin_logout(c: CaretakerForm) -> RedirectResponse:
    if c.refusal() is None:
        c.portal.admin_sessions.close(c.sid)
    resp = redirect(f"/admin?{urlencode({'lang': c.form.t.lang})}", 303)
    resp.delete_cookie(ADMIN_COOKIE, path="/admin", httponly=True, samesite="strict")
    return resp


async def _mac_action(
    c: Caretaker, mac: str, make: Callable[[str], AgentRequest], done: str
) -> HTMLResponse | RedirectResponse:
    """A caretaker action on one device: session and CSRF checked, MAC validated, asked."""
    why = c.refusal()
    if why:
        return c.refused(why)
    try:
        mac = normalise_mac(mac)
    except ValueError:
        return _back(c.form.t, "bad_mac")
    r = await c.portal.agent.ask(make(mac))
    return _back(c.form.t, done if r.ok else _failure(r.error))


@_action("/name", "Give a device a name (empty: back to its DHCP hostname)")
async def admin_name(
    c: CaretakerForm, mac: MacField = "", name: Annotated[str, Form(max_length=80)] = ""
) -> HTMLResponse | RedirectResponse:
    return await _mac_action(c, mac, lambda m: NameDevice(mac=m, name=name), "named")


@_action("/disconnect", "Disconnect a device")
async def admin_disconnect(c: CaretakerForm, mac: MacField = "") -> HTMLResponse | RedirectResponse:
    return await _mac_action(c, mac, lambda m: Disconnect(mac=m), "disconnected")


@_action("/block", "Block or unblock a MAC address")
async def admin_block(
    c: CaretakerForm, mac: MacField = "", blocked: Annotated[str, Form(max_length=8)] = "1"
) -> HTMLResponse | RedirectResponse:
    block = blocked not in ("0", "false", "")
    done = "blocked" if block else "unblocked"
    return await _mac_action(c, mac, lambda m: Block(mac=m, blocked=block), done)


def _failure(error: str | None) -> str:
    if error == "own_hub":
        return "own_hub"
    return "unavailable" if error == UNAVAILABLE else "failed"


@_action("/vouchers", "Issue vouchers and show them printable", after="refused")
async def admin_vouchers(
    c: CaretakerForm,
    plan_id: Annotated[str, Form(max_length=64)] = "",
    count: Annotated[str, Form(max_length=8)] = "1",
) -> HTMLResponse | RedirectResponse:
    why = c.refusal()
    if why:
        return c.refused(why)
    portal, t = c.portal, c.form.t
    config = portal.settings.config
    try:
        plan = config.plan(plan_id)
        n = int(count)
    except (KeyError, ValueError):
        return _back(t, "bad_plan")
    if not 1 <= n <= MAX_VOUCHERS_AT_ONCE:
        return _back(t, "bad_plan")
    r = await portal.agent.ask(IssueVouchers(plan_id=plan.id, count=n))
    if not r.ok or not r.vouchers:
        return _back(t, _failure(r.error))
    ctx = {
        **_base(portal, t, t("vouchers.title")),
        "plan_name": localised(plan.name, t.lang, config.portal.default_language),
        "price": plan.price_label,
        "codes": [(format_code(_canonical(c)), _canonical(c)) for c in r.vouchers],
        "pdf": "/admin/vouchers.pdf?"
        + urlencode({"plan_id": plan.id, "codes": ",".join(r.vouchers), "lang": t.lang}),
        "portal_url": portal.settings.base_url,
    }
    return html(portal.renderer.page("admin_vouchers.html", ctx))


def _canonical(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


# Tickets printed at the hub carry the same QR code as the central sheets
# (provisioning/voucher_sheet.py: the portal URL with ?code=, which fills the form).
@page_route(router.get, "/qr/{code}.svg", "A ticket's QR code (SVG)", {401: "login required"},
            html=False)  # fmt: skip
async def admin_qr(portal: PortalDep, sid: AdminSession, code: str) -> Response:
    code = _canonical(code)
    if sid is None or not 4 <= len(code) <= 16:
        return Response(status_code=401 if sid is None else 404)
    config = portal.settings.config
    url = Card("", "", "", code, default_portal_url(config.network.lan, config.portal)).qr_url
    svg = await asyncio.to_thread(_qr_svg, url)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private"})


def _qr_svg(url: str) -> bytes:
    import io

    import segno

    buf = io.BytesIO()
    segno.make(url, error="m", micro=False).save(buf, kind="svg", scale=4, border=2, xmldecl=False)
    return buf.getvalue()


@page_route(router.get, "/vouchers.pdf", "The tickets just issued as the central A4 sheet (PDF)",
            {401: "login required"}, html=False)  # fmt: skip
async def admin_vouchers_pdf(
    portal: PortalDep,
    t: LangDep,
    sid: AdminSession,
    plan_id: Annotated[str, Query(max_length=64)] = "",
    codes: Annotated[str, Query(max_length=20 * MAX_VOUCHERS_AT_ONCE)] = "",
) -> Response:
    if sid is None:
        return Response(status_code=401)
    wanted = [_canonical(c) for c in codes.split(",") if c.strip()][:MAX_VOUCHERS_AT_ONCE]
    try:
        cards = hub_cards(portal.settings.config, plan_id, wanted, t.lang)
    except KeyError:
        return Response(status_code=404)
    if not cards:
        return Response(status_code=404)
    pdf = await asyncio.to_thread(_sheet, cards, portal.settings.config.hub.name)
    return Response(pdf, media_type="application/pdf", headers={"Cache-Control": "private"})


def _sheet(cards: list[Card], title: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "tickets.pdf"
        render_sheet(cards, out, title=title)
        return out.read_bytes()
