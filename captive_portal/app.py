"""Wiring only: build the portal's parts from the hub config and mount the routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp

from captive_portal import content_routes
from captive_portal.agent import Agent
from captive_portal.fastpath import FastPath, QuickAnswers
from captive_portal.head import HeadAsGet
from captive_portal.hostcheck import ForeignHostRedirect
from captive_portal.live_config import LiveConfig
from captive_portal.render import Renderer
from captive_portal.routes import admin, captive_api, login, pay, probes, splash, status
from captive_portal.security import CsrfSigner, load_or_create_secret
from captive_portal.services import Portal
from captive_portal.settings import Settings, build_settings
from captive_portal.state import AdminSessions, PortalState, StoredLockout
from hub_agent.config import HubConfig

ADMIN_ATTEMPTS = 5  # caretaker password guesses per IP per lockout window


class PortalApp(FastAPI):
    """FastAPI with captive_portal.fastpath in front of its whole middleware stack."""

    def build_middleware_stack(self) -> ASGIApp:
        return FastPath(super().build_middleware_stack(), quick=self.state.quick)


def create_app(
    config: HubConfig,
    *,
    secret: bytes | None = None,
    secret_file: Path | None = None,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
    follow: tuple[Path, Callable[[HubConfig], Settings]] | None = None,
) -> FastAPI:
    """The portal app. ``secret`` (or ``secret_file``) signs CSRF tokens; without either a
    fresh key is drawn for this run, never a default. ``follow`` = (the agent's config copy,
    how to build settings from a config): the portal then follows pushed configs."""
    settings = settings or build_settings(config)
    key = secret if secret is not None else load_or_create_secret(secret_file)
    # caretaker sessions and lockouts beside the secret: they survive a portal restart
    state = PortalState(secret_file.parent / "portal.db" if secret_file else None)
    portal = Portal(
        settings=settings,
        agent=Agent(settings.agent_socket, settings.agent_timeout_s),
        renderer=Renderer(),
        csrf=CsrfSigner(key),
        admin_lockout=StoredLockout(state, ADMIN_ATTEMPTS, config.portal.lockout_seconds, clock),
        admin_sessions=AdminSessions(state),
    )
    live = LiveConfig(portal, *follow) if follow else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(portal.agent.watch())]  # the device cache's feed
        # what start-up built (modules, routes, templates) lives as long as the process:
        # out of the collector's sight, an old-generation pass no longer walks it while
        # the one worker's requests wait (a 94 ms pause under load before this)
        gc.collect()
        gc.freeze()
        if live:
            tasks.append(asyncio.create_task(live.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = PortalApp(
        title="Relais captive portal",
        version="1",
        docs_url=None,  # no Swagger UI: it loads scripts from a CDN the LAN cannot reach
        redoc_url=None,
        lifespan=lifespan,
        # the hub exports no OpenTelemetry; asking for the global providers on every
        # request cost a tenth of an OS probe's answer (bench/bench_portal.py)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.portal = portal
    app.state.quick = QuickAnswers(portal)  # also answered by the HTTP protocol (quick_http)
    app.state.live_config = live
    for module in (splash, login, status, probes, captive_api, admin, content_routes, pay):
        app.include_router(module.router)
    app.add_middleware(
        ForeignHostRedirect,
        # the portal's current settings: a pushed config may move its address or port
        is_own_host=lambda host: portal.settings.is_own_host(host),
        splash_url=lambda ip: portal.settings.splash_url(ip),
        keep=probes.PROBE_PATHS,
    )
    app.add_middleware(HeadAsGet)  # outermost: every layer below sees a GET
    return app
