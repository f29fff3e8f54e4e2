"""The portal follows a pushed port or LAN address (issue 16): its listeners are told to
move (``on_listen``), and a foreign request is redirected to the new splash URL at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from captive_portal.live_config import LiveConfig
from captive_portal.settings import build_settings
from hub_agent.config import HubConfig, validate_config
from hub_agent.portal_view import write_portal_view
from tests.unit.real_agent import running_hub


def _pushed(config: HubConfig, change: dict[str, Any]) -> HubConfig:
    wire = config.to_wire()
    wire["version"] = config.version + 1
    for section, values in change.items():
        wire[section].update(values)
    return validate_config(wire)


def test_a_new_port_moves_the_listeners_and_the_redirect(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        view = write_portal_view(hub.config, group=None)
        live = LiveConfig(hub.app.state.portal, view, build_settings)
        moves: list[int] = []
        live.on_listen = lambda c: moves.append(c.portal.http_port)
        asyncio.run(live.refresh())
        before = hub.client().get("http://example.com/", follow_redirects=False)
        assert before.status_code == 302 and before.headers["location"] == "http://10.42.0.1:8080/"

        priced = _pushed(hub.config, {"portal": {"login_attempts": 20}})
        write_portal_view(priced, group=None)
        assert asyncio.run(live.refresh()) and moves == []  # same listeners: nothing moves

        moved = _pushed(priced, {"portal": {"http_port": 8090}})
        write_portal_view(moved, group=None)
        assert asyncio.run(live.refresh()) and moves == [8090]
        after = hub.client().get("http://example.com/", follow_redirects=False)
        assert after.status_code == 302 and after.headers["location"] == "http://10.42.0.1:8090/"
        own = hub.client().get("http://10.42.0.1:8090/", follow_redirects=False)
        assert own.status_code == 200  # the new address:port is the portal's own host
