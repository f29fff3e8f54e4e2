"""The portal follows a pushed port or LAN address (issue 16): its listeners are told to
move (``on_listen``), and a foreign request is redirected to the new splash URL at once."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from captive_portal.app import create_app
from captive_portal.cli import Listeners, listen_on, server_configs
from captive_portal.live_config import LiveConfig
from captive_portal.settings import build_settings
from hub_agent.config import HubConfig, validate_config
from hub_agent.portal_follow import PortalFollow
from hub_agent.portal_view import write_portal_view
from lab.broker import free_port
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


async def _answers(url: str) -> bool:
    async with httpx.AsyncClient() as c:
        try:
            return (await c.get(url, timeout=2)).status_code == 200
        except httpx.TransportError:
            return False


async def _until(what: str, url: str, up: bool) -> None:
    deadline = time.monotonic() + 60  # generous: the shared box is loaded
    while await _answers(url) != up:
        assert time.monotonic() < deadline, f"{url}: {what}"
        await asyncio.sleep(0.05)


def test_a_port_that_is_taken_keeps_the_portal_where_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The portal (cli's listeners, uvicorn, the real agent) keeps serving its old port,
    redirects there, and says once why; a free port later is followed."""
    with running_hub(tmp_path) as hub, socket.socket() as taken:
        follow = hub.agent.handler.portal = PortalFollow()  # what the agent hears
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        start = _pushed(hub.config, {"portal": {"http_port": free_port()}})
        old = f"http://127.0.0.1:{start.portal.http_port}/"
        app = create_app(start, secret=b"s" * 32)
        portal = app.state.portal
        live = LiveConfig(portal, write_portal_view(start, group=None), build_settings)

        def make(c: HubConfig) -> list[uvicorn.Config]:
            return server_configs(c, app, *listen_on(c, "127.0.0.1", None))

        async def scenario() -> None:
            listeners = Listeners(make, start)
            live.on_listen = listeners.move
            serving = asyncio.create_task(listeners.run())
            try:
                await _until("the portal starts", old, up=True)
                blocked = _pushed(start, {"portal": {"http_port": busy}})
                write_portal_view(blocked, group=None)
                with caplog.at_level(logging.ERROR, logger="captive_portal.live_config"):
                    assert not await live.refresh()
                    assert not await live.refresh()  # checked again: no second line
                lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
                assert len(lines) == 1 and f"127.0.0.1:{busy}" in lines[0], lines
                assert portal.settings.config == start  # its redirects still name the old port
                assert await _answers(old) and not serving.done()
                # the agent heard why (its check after the apply rolls the config back)
                why = await asyncio.to_thread(follow.refusal, blocked.version, 0)
                assert why is not None and f"127.0.0.1:{busy}" in why, why

                moved = _pushed(blocked, {"portal": {"http_port": free_port()}})
                write_portal_view(moved, group=None)
                assert await live.refresh()
                await _until(
                    "the portal moves", f"http://127.0.0.1:{moved.portal.http_port}/", True
                )
                await _until("the old port is let go", old, up=False)
                assert follow.heard(moved.version) and follow.refusal(moved.version, 0) is None
            finally:
                listeners.stop()
                await serving

        asyncio.run(scenario())
