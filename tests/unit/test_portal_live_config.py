"""The portal follows the config the agent enforces: a pushed price or plan shows on the
splash page without a portal restart; a broken copy changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from captive_portal.live_config import LiveConfig
from captive_portal.settings import build_settings
from hub_agent.config import validate_config
from hub_agent.portal_view import portal_view, portal_view_path, write_portal_view
from tests.unit.real_agent import running_hub


def test_splash_follows_a_pushed_config_and_ignores_a_broken_copy(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        page = hub.client().get("/").text
        assert "100 FCFA" in page
        wire = hub.config.to_wire()
        wire["version"] = hub.config.version + 1
        wire["plans"][0]["price_label"] = "150 FCFA"
        wire["hub"]["name"] = "Mairie de Kpalimé (nouveau nom)"
        pushed = validate_config(wire)
        view = write_portal_view(pushed, group=None)
        assert view == portal_view_path(pushed) and view.stat().st_mode & 0o777 == 0o640
        live = LiveConfig(hub.app.state.portal, view, build_settings)
        assert asyncio.run(live.refresh()) is True
        page = hub.client().get("/").text
        assert "150 FCFA" in page and "nouveau nom" in page
        assert asyncio.run(live.refresh()) is False  # unchanged file: nothing to do

        view.write_text('{"plans": "not a list"}')
        assert asyncio.run(live.refresh()) is False
        assert "150 FCFA" in hub.client().get("/").text  # the last good config stays


def test_the_copy_holds_no_secrets(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        wire = hub.config.to_wire()
        wire["mqtt"]["password"] = "broker-secret"
        wire["trust"]["voucher_secret"] = "v" * 43
        data = portal_view(validate_config(wire))
        assert "broker-secret" not in str(data) and "v" * 43 not in str(data)
        validate_config(data)  # still a valid config for the portal
