"""The fast path (captive_portal/fastpath.py) and the pre-rendered splash
(captive_portal/splash_pages.py) answer exactly what the FastAPI routes and a full Jinja2
rendering answer: same status, headers and bytes, only the CSRF tokens differ (they carry
the second they were issued). The portal runs against the real agent (real_agent.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from captive_portal.agent import DeviceState
from captive_portal.app import create_app
from captive_portal.fastpath import FastPath
from captive_portal.render import Renderer, splash_context
from captive_portal.routes.probes import PROBES
from captive_portal.settings import build_settings
from captive_portal.splash_pages import SplashPages
from tests.unit.real_agent import (
    DEV1,
    HUB_URL,
    Hub,
    login,
    portal_config,
    running_hub,
)

SECRET = b"s" * 32  # running_hub's form key
_TOKEN = re.compile(rb"\d{10}\.[0-9a-f]{32}")
REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/", {}),
    ("/?lang=en", {}),
    ("/", {"Accept-Language": "en-GB,en;q=0.9"}),
    ("/?lang=xx&lang=en&other=1", {}),
    ("/?code=%20abcd-efgh%20", {}),
    ('/?code="><script>alert(1)</script>&lang=en', {}),
    ("/?code=" + "A" * 65, {}),  # too long: the route's 422
    ("/api/captive", {}),
    ("/?lang=en", {"Host": "example.com"}),  # a foreign host: to the splash, by hostcheck
    ("/generate_204", {"Host": "connectivitycheck.gstatic.com"}),  # probes: any host
    *((path, {}) for path in PROBES),
]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as h:
        yield h


def _routes_only(hub: Hub) -> FastAPI:
    """The same portal (config, key, agent) without the fast path: what FastAPI answers."""
    app = create_app(hub.config, secret=SECRET, settings=build_settings(hub.config))
    app.middleware_stack = FastAPI.build_middleware_stack(app)  # not PortalApp's
    return app


def _answers(app: FastAPI) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        transport = httpx.ASGITransport(app=app, client=(DEV1, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=HUB_URL) as c:
            out: list[tuple[object, ...]] = []
            for path, headers in REQUESTS:
                r = await c.get(path, headers=headers)
                masked = sorted((k, _TOKEN.sub(b"T", v.encode())) for k, v in r.headers.items())
                out.append((path, r.status_code, masked, _TOKEN.sub(b"T", r.content)))
            return out

    return asyncio.run(run())


def test_fast_answers_are_the_routes_answers_captive_and_through(hub: Hub) -> None:
    for through in (False, True):
        if through:
            assert login(hub.client(), hub.agent.issue("heure")).status_code == 200
        fast, routed = _answers(hub.app), _answers(_routes_only(hub))
        assert fast == routed
        by_path = {a[0]: a for a in fast}
        assert by_path["/generate_204"][1] == (204 if through else 302)
        assert by_path["/?code=" + "A" * 65][1] == 422
        assert b"&#34;&gt;&lt;script&gt;" in by_path[REQUESTS[5][0]][3]  # type: ignore[operator]


def test_a_probe_head_is_the_get_without_body_on_the_fast_path(hub: Hub) -> None:
    async def behind(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"{scope['method']} {scope['path']} went on to FastAPI")

    fast_only = FastPath(behind, quick=hub.app.state.quick)  # the portal's cache and key

    async def run() -> None:
        for app in (hub.app, fast_only):
            transport = httpx.ASGITransport(app=app, client=(DEV1, 40000))
            async with httpx.AsyncClient(transport=transport, base_url=HUB_URL) as c:
                for path in PROBES:
                    get, head = await c.get(path), await c.head(path)
                    assert (head.status_code, head.headers) == (get.status_code, get.headers)
                    assert head.content == b"" and int(head.headers["content-length"]) == len(
                        get.content
                    )

    asyncio.run(run())


def _state(available: bool = True, uplink: bool | None = True, stale: bool = False) -> DeviceState:
    return DeviceState(available, None, uplink, pay_online=False, stale=stale)


@pytest.mark.parametrize(
    "state",
    [_state(), _state(uplink=False), _state(available=False, uplink=None), _state(stale=True)],
    ids=["captive", "offline", "agent silent", "stale"],
)
@pytest.mark.parametrize("lang", ["fr", "en"])
def test_a_filled_splash_is_the_full_rendering(
    tmp_path: Path, state: DeviceState, lang: str
) -> None:
    settings = build_settings(portal_config(tmp_path / "agent.sock"))
    t = settings.languages.translator(lang)
    renderer, pages = Renderer(), SplashPages()
    offer = {"plans": [{"id": "heure", "name": "Pass", "price": "100 FCFA"}], "phone": ""}
    for pay in (None, {**offer, "network": "", "csrf": "1700000000.pay"}):
        for csrf, code in [("1700000000.a", ""), ("1700000001.b", "<\"&'>"), ("1.c", "ABCD")]:
            want = splash_context(settings, t, state, csrf=csrf, code=code)
            want["pay"] = pay
            got = pages.page(renderer, settings, t, state, pay, csrf=csrf, code=code)
            assert got.decode() == renderer.page("splash.html", want)
    assert len(pages._pages) == 2  # one page per offer shown or not, filled per request
