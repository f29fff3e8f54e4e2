"""A pushed portal port the portal cannot take is rolled back, not reported applied (issue 16).

In the real lab (tests/test_config_live_lab.py's hub: `hub-agent run`, `captive-portal`,
Mosquitto upstream), another process already listens on the port the centre pushes. The
portal cannot move there and tells the agent; the agent's check after the apply hears it and
rolls the config back: the report says ``rolled_back`` with the field and the portal's
error, the kernel sends captive phones to the old port again, where the portal still
answers, the online phone stays online, nothing restarted. A later push to a free port is
followed.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab.broker import Broker
from lab.netns import HUB_LAN
from tests.linux.test_agent_e2e import PORTAL, Hub, _reaches_upstream
from tests.linux.test_config_live_lab import (
    captive_phone_sent_to,
    online_phone,
    push,
    pushed_hub,
    same_processes,
    wait_for,
)

pytestmark = pytest.mark.root
__all__ = ["pushed_hub"]  # the fixture, used by name

TAKEN = 8090


def port(n: int) -> Any:
    def change(wire: dict[str, Any]) -> None:
        wire["portal"]["http_port"] = n

    return change


def test_a_pushed_port_the_portal_cannot_take_is_rolled_back(
    pushed_hub: tuple[Hub, Broker],
) -> None:
    hub, broker = pushed_hub
    c1, c2 = hub.lab.clients
    pids = online_phone(hub)
    squatter = hub.lab.spawn(
        hub.lab.hub_ns, "python3", "-m", "http.server", "--bind", HUB_LAN, str(TAKEN),
        log="squatter.log",
    )  # fmt: skip
    try:
        wait_for("the port taken", lambda: f"{HUB_LAN}:{TAKEN}" in _listening(hub), hub)
        report = push(hub, broker, port(TAKEN), expect="rolled_back")
        reason = report["reason"]
        assert "portal.http_port" in reason and f"{HUB_LAN}:{TAKEN}" in reason, reason
        captive_phone_sent_to(hub, c2, PORTAL)  # the kernel's redirect is the old port's
        assert _reaches_upstream(c1), "the phone online before the push lost its access"
        assert "not followed" in hub.log("portal.log")
    finally:
        squatter.terminate()
        squatter.wait(10)
    push(hub, broker, port(TAKEN + 1))  # a free port: followed
    captive_phone_sent_to(hub, c2, f"http://{HUB_LAN}:{TAKEN + 1}")
    same_processes(hub, pids)


def _listening(hub: Hub) -> str:
    return hub.lab.hub_exec("ss", "-H", "-tln").stdout
