""" "Prolonger" (buy more) for a device that is already through: one decision for the
status page's offer and the RFC 8908 answer's ``can-extend-session``
(``captive_portal.phone.can_extend``), with the agent asked at most once per page."""

from __future__ import annotations

from typing import Any

from captive_portal.agent import DeviceState
from captive_portal.i18n import Translator
from captive_portal.phone import can_extend
from captive_portal.routes.pay import pay_offer
from captive_portal.services import Portal
from hub_agent.api.protocol import PayStatus


async def extend_offered(portal: Portal, ip: str, state: DeviceState) -> bool:
    """Whether this device is offered "prolonger" now (and told it can extend)."""
    known = extend_known(portal, state)
    if known is not None:
        return known
    online = (await portal.agent.ask(PayStatus(ip=ip))).pay_online
    return can_extend(portal.settings.config, state.session, online)


def extend_known(portal: Portal, state: DeviceState) -> bool | None:
    """``extend_offered`` without asking the agent; None when it must be asked."""
    session = state.session
    if not can_extend(portal.settings.config, session, True):
        return False  # no session, or nothing for sale: no need to ask the agent
    if state.pay_online is None:
        return None
    return can_extend(portal.settings.config, session, state.pay_online)


async def extend_box(
    portal: Portal, t: Translator, ip: str, state: DeviceState
) -> dict[str, Any] | None:
    """The status page's mobile-money box (the splash's own), or None: not offered."""
    if not await extend_offered(portal, ip, state):
        return None
    return await pay_offer(portal, t, ip)
