"""The portal's only door to the hub: the agent's UNIX socket. Fails closed.

Every question about devices, sessions, vouchers and health goes to the agent; when it
does not answer, the portal treats the device as not authorised and says the service is
temporarily unavailable. Errors are translated here, once, into plain outcomes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hub_agent.api.client import AgentUnavailable, call
from hub_agent.api.protocol import DeviceView, Request, Response, SessionView, Whoami

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"
ACTIVE_STATES = frozenset({"authorised", "throttled"})


def active_session(device: DeviceView | None) -> SessionView | None:
    """The device's session when it currently lets the device through, else None."""
    if device is None or device.blocked or device.session is None:
        return None
    return device.session if device.session.state in ACTIVE_STATES else None


@dataclass(frozen=True)
class DeviceState:
    """What the portal knows about the device asking, from one agent round trip."""

    available: bool  # False: the agent did not answer (fail closed)
    device: DeviceView | None
    uplink_up: bool | None

    @property
    def session(self) -> SessionView | None:
        return active_session(self.device) if self.available else None

    @property
    def authorised(self) -> bool:
        return self.session is not None

    @property
    def offline(self) -> bool:
        return self.uplink_up is False


class Agent:
    def __init__(self, socket_path: Path, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    async def ask(self, request: Request, timeout_s: float | None = None) -> Response:
        """The agent's answer, or ``ok=False, error="unavailable"`` when it is silent."""
        try:
            timeout = self.timeout_s if timeout_s is None else timeout_s
            return await call(self.socket_path, request, timeout=timeout)
        except AgentUnavailable as e:
            log.warning("agent unavailable for op=%s: %s", request.op, e)
            return Response(ok=False, error=UNAVAILABLE, message=str(e))
        except ValueError as e:  # an answer that is not a Response: treat as silence
            log.error("agent answered garbage for op=%s: %s", request.op, e)
            return Response(ok=False, error=UNAVAILABLE, message="bad agent answer")

    async def whoami(self, ip: str) -> DeviceState:
        r = await self.ask(Whoami(ip=ip))
        if r.error == UNAVAILABLE:
            return DeviceState(False, None, None)
        return DeviceState(True, r.device if r.ok else None, r.uplink_up)
