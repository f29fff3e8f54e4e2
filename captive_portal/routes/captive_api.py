"""GET /api/captive: the RFC 8908 Captive Portal API."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response

from captive_portal.agent import DeviceState
from captive_portal.deps import ClientIp, DeviceDep, PortalDep
from captive_portal.extend import extend_known, extend_offered
from captive_portal.services import Portal
from captive_portal.settings import Settings

router = APIRouter()

MEDIA_TYPE = "application/captive+json"


def captive_document(
    settings: Settings, state: DeviceState, can_extend: bool = False, ip: str = ""
) -> dict[str, Any]:
    """Pure: the RFC 8908 JSON for this device's state (fail closed: captive when unsure).
    ``can_extend``: what the status page offers (``captive_portal.extend``); ``ip``: the
    device's, whose family the URLs are in."""
    base = settings.api_url(ip)
    session = state.session
    doc: dict[str, Any] = {
        "captive": session is None,
        "user-portal-url": base,
        "venue-info-url": base + "content/",
        "can-extend-session": session is not None and can_extend,
    }
    if session is not None:
        if session.seconds_remaining is not None:
            doc["seconds-remaining"] = max(0, session.seconds_remaining)
        if session.bytes_remaining is not None:
            doc["bytes-remaining"] = max(0, session.bytes_remaining)
    return doc


@router.get(
    "/api/captive",
    summary="RFC 8908 Captive Portal API",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}}},
)
async def captive_api(portal: PortalDep, ip: ClientIp, state: DeviceDep) -> Response:
    return await captive_answer(portal, ip, state)


async def captive_answer(portal: Portal, ip: str, state: DeviceState) -> Response:
    """The route's and captive_portal.fastpath's answer."""
    known = captive_known(portal, ip, state)
    if known is not None:
        return known
    extend = await extend_offered(portal, ip, state)
    return _answer(captive_document(portal.settings, state, extend, ip))


def captive_known(portal: Portal, ip: str, state: DeviceState) -> Response | None:
    """The answer when the state says all it needs (no question to the agent), else None."""
    extend = extend_known(portal, state)
    if extend is None:
        return None
    return _answer(captive_document(portal.settings, state, extend, ip))


def _answer(doc: dict[str, Any]) -> Response:
    body = json.dumps(doc, separators=(",", ":"))
    return Response(body, media_type=MEDIA_TYPE, headers={"Cache-Control": "private"})
