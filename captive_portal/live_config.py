"""Follow the config the agent enforces (``hub_agent.portal_view``) while the portal runs.

A config pushed by the centre changes plans, prices, the hub's name, terms or login
methods; the splash page must show them as soon as the agent applies them, not at the
next restart. A background task checks the agent's copy every few seconds (off the
request path) and swaps the portal's settings; a copy that does not validate is logged
and the current settings stay. A new LAN address or port calls ``on_listen``: the
portal's servers move there (cli.py), in the same process; when they cannot (the port is
taken, the address is not on the host yet) the portal stays where it is, whole: its
redirects keep naming the address it answers on, one line says why, and the copy is tried
again at each check. Either way the agent is told (``PortalListen``): it waits for that word
before reporting such a config applied, and rolls it back on a refusal
(hub_agent/portal_follow.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from captive_portal.services import Portal
from captive_portal.settings import Settings, SettingsError
from hub_agent.api.protocol import PortalListen
from hub_agent.config import ConfigError, HubConfig, validate_config
from hub_agent.portal_view import listen_changes

log = logging.getLogger(__name__)

CHECK_EVERY_S = 3.0


def read_view(path: Path) -> tuple[float, HubConfig] | None:
    """(mtime, config) of the agent's copy; None when absent or unreadable (logged)."""
    try:
        mtime = os.stat(path).st_mtime
        data = json.loads(path.read_bytes())
        return mtime, validate_config(data, str(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ConfigError) as e:
        log.warning("agent's config copy %s not usable: %s", path, e)
        return None


class LiveConfig:
    def __init__(
        self,
        portal: Portal,
        path: Path,
        rebuild: Callable[[HubConfig], Settings],
        every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.portal = portal
        self.path = path
        self.rebuild = rebuild
        self.every_s = every_s
        self._mtime: float | None = None
        # called when the LAN address or the portal's ports change (cli: serve there);
        # None when the listeners move, else why they cannot
        self.on_listen: Callable[[HubConfig], str | None] | None = None
        self._refused: HubConfig | None = None  # the copy whose listeners could not move
        self._tell: PortalListen | None = None  # the agent's to hear after this check

    def adopt(self, found: tuple[float, HubConfig] | None) -> bool:
        """Switch to the copy read; True when the portal's settings changed."""
        if found is None or found[0] == self._mtime:
            return False
        mtime, config = found
        current = self.portal.settings.config
        if config == current:
            self._mtime = mtime
            return False
        try:
            settings = self.rebuild(config)
        except SettingsError as e:
            log.warning("agent's config copy refused by the portal: %s", e)
            return False
        if listen_changes(current, config):  # a new LAN address or port: ``on_listen``
            if self.on_listen is None:
                log.warning("LAN address or portal ports changed: restart the portal to follow")
            else:
                why = self.on_listen(config)
                self._tell = PortalListen(version=config.version, error=why)
                if why is not None:
                    if config != self._refused:  # one line per refused copy, not per check
                        log.error("portal config v%s not followed: %s", config.version, why)
                        self._refused = config
                    return False
        self._refused = None
        self.portal.settings = settings
        self._mtime = mtime
        log.info("portal follows config version %s", config.version)
        return True

    async def refresh(self) -> bool:
        changed = self.adopt(await asyncio.to_thread(read_view, self.path))
        tell, self._tell = self._tell, None
        if tell is not None:  # again at each check while refused: a word lost is said again
            await self.portal.agent.ask(tell)
        return changed

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bad pass must not end the follower
                log.exception("following the agent's config failed")
            await asyncio.sleep(self.every_s)
