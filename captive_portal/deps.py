"""Request dependencies (FastAPI ``Annotated`` style): the portal, the device, the language."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from captive_portal.agent import DeviceState
from captive_portal.i18n import Translator
from captive_portal.services import Portal

ADMIN_COOKIE = "relais_admin"
LANG_MAX = 16  # ?lang= longer than any language code is refused


def get_portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


PortalDep = Annotated[Portal, Depends(get_portal)]


def get_client_ip(request: Request) -> str:
    """The device is who its IP says: nftables keeps the source address on redirect."""
    return request.client.host if request.client else ""


ClientIp = Annotated[str, Depends(get_client_ip)]


async def get_device_state(portal: PortalDep, ip: ClientIp) -> DeviceState:
    return await portal.agent.whoami(ip)


DeviceDep = Annotated[DeviceState, Depends(get_device_state)]


async def get_captive_state(portal: PortalDep, ip: ClientIp) -> DeviceState:
    """For the OS probes and the splash: only "through or not" matters (agent.py)."""
    return await portal.agent.captive(ip)


CaptiveDep = Annotated[DeviceState, Depends(get_captive_state)]


def choose_translator(portal: Portal, lang: str | None, accept_language: str | None) -> Translator:
    """``?lang=``, else the browser's Accept-Language, else the hub's default."""
    languages = portal.settings.languages
    return languages.translator(languages.choose(lang, accept_language))


def translator_for(portal: Portal, request: Request, lang: str | None) -> Translator:
    return choose_translator(portal, lang, request.headers.get("accept-language"))


def get_translator(
    request: Request,
    portal: PortalDep,
    lang: Annotated[str | None, Query(max_length=LANG_MAX)] = None,
) -> Translator:
    return translator_for(portal, request, lang)


LangDep = Annotated[Translator, Depends(get_translator)]


def get_admin_session(request: Request, portal: PortalDep) -> str | None:
    sid = request.cookies.get(ADMIN_COOKIE)
    return sid if portal.admin_sessions.valid(sid) else None


AdminSession = Annotated[str | None, Depends(get_admin_session)]
