"""What every captive phone asks again and again, answered before FastAPI's routing.

The OS probes, the RFC 8908 API and the splash page are most of a crowd's requests. Routed
through FastAPI, each paid for route matching, dependency solving and a thread hop per
plain-function dependency, many times the cost of the answer. Here a GET for one of them
goes straight to the function its route calls (``probe_answer``, ``captive_answer``,
``splash_page``), with the same device state (the portal's cache, kept true by the
agent's change feed), the same CSRF token and the same bytes. Anything else, and a query
the route would refuse (too long), goes on to FastAPI unchanged. Mounted inside the host
check and HEAD handling (captive_portal.app), so those apply as before.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from captive_portal.agent import FRESH_CAPTIVE_S
from captive_portal.deps import LANG_MAX, choose_translator
from captive_portal.routes.captive_api import captive_answer
from captive_portal.routes.probes import PROBES, probe_answer
from captive_portal.routes.splash import CODE_MAX, splash_page
from captive_portal.services import Portal

API_PATH = "/api/captive"


class FastPath:
    def __init__(self, app: ASGIApp, *, portal: Portal) -> None:
        self.app = app
        self.portal = portal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        portal = self.portal
        client = scope.get("client")
        ip = client[0] if client else ""  # as deps.get_client_ip: nftables keeps the source
        answer = PROBES.get(path)  # type: ignore[arg-type]
        if answer is not None:
            state = await portal.agent.whoami(ip, FRESH_CAPTIVE_S)
            response = probe_answer(answer, state, portal.settings.base_url)
        elif path == API_PATH:
            response = await captive_answer(portal, ip, await portal.agent.whoami(ip))
        elif path == "/":
            # the route's query: last value wins, blanks kept (as Starlette parses it)
            query = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
            lang, code = query.get("lang"), query.get("code", "")
            if len(code) > CODE_MAX or (lang is not None and len(lang) > LANG_MAX):
                await self.app(scope, receive, send)  # FastAPI's 422, as documented
                return
            accept = next((v for k, v in scope["headers"] if k == b"accept-language"), None)
            t = choose_translator(portal, lang, accept.decode("latin-1") if accept else None)
            state = await portal.agent.whoami(ip, FRESH_CAPTIVE_S)
            response = await splash_page(portal, t, ip, state, code)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
