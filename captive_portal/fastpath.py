"""What every captive phone asks again and again, answered in front of FastAPI.

The OS probes, the RFC 8908 API and the splash page are most of a crowd's requests. Through
FastAPI each paid for its error, exception and body-limit layers, route matching,
dependency solving and a thread hop per plain-function dependency: many times the cost of
the answer. Here a GET for one of them goes straight to the function its route calls
(``probe_answer``, ``captive_answer``, ``splash_page``), with the same device state (the
portal's cache, kept true by the agent's change feed), the same CSRF token and the same
bytes; a probe's answer, which only depends on "through or not", is built once. The host
check applies as in captive_portal.hostcheck (probes are answered whatever their host,
the pages only for the portal's own). A HEAD for a probe (some detectors send HEAD) gets
the GET's status and headers without the body, as ``head.HeadAsGet`` would give it; anything
else (another HEAD, a foreign host, a query the route would refuse) goes on to FastAPI
unchanged. Mounted by ``app.PortalApp``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from captive_portal.deps import LANG_MAX, choose_translator
from captive_portal.routes.captive_api import captive_answer
from captive_portal.routes.probes import PROBES, probe_answer
from captive_portal.routes.splash import CODE_MAX, splash_page
from captive_portal.services import Portal

API_PATH = "/api/captive"
_Raw = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body


class FastPath:
    def __init__(self, app: ASGIApp, *, portal: Portal) -> None:
        self.app = app
        self.portal = portal
        self._probes: dict[tuple[str, bool, str], _Raw] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"] if scope["type"] == "http" else ""
        path = scope["path"] if method else ""
        answer = PROBES.get(path)
        if method != "GET" and (method != "HEAD" or answer is None):
            await self.app(scope, receive, send)
            return
        portal = self.portal
        client = scope.get("client")
        ip = client[0] if client else ""  # as deps.get_client_ip: nftables keeps the source
        if answer is not None:
            state = await portal.agent.captive(ip)
            key = (path, state.authorised, portal.settings.base_url)
            raw = self._probes.get(key)
            if raw is None:
                if len(self._probes) > 64:  # the base URL moved often: start afresh
                    self._probes.clear()
                r = probe_answer(answer, state, key[2])
                raw = self._probes[key] = (r.status_code, r.raw_headers, bytes(r.body))
            await send({"type": "http.response.start", "status": raw[0], "headers": raw[1]})
            await send({"type": "http.response.body", "body": raw[2] if method == "GET" else b""})
            return
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if path not in ("/", API_PATH) or not portal.settings.is_own_host(
            host.decode("latin-1") if host is not None else None
        ):
            await self.app(scope, receive, send)  # hostcheck redirects a foreign host
            return
        if path == API_PATH:
            response = await captive_answer(portal, ip, await portal.agent.whoami(ip))
        else:
            # the route's query: last value wins, blanks kept (as Starlette parses it)
            query = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
            lang, code = query.get("lang"), query.get("code", "")
            if len(code) > CODE_MAX or (lang is not None and len(lang) > LANG_MAX):
                await self.app(scope, receive, send)  # FastAPI's 422, as documented
                return
            accept = next((v for k, v in scope["headers"] if k == b"accept-language"), None)
            t = choose_translator(portal, lang, accept.decode("latin-1") if accept else None)
            state = await portal.agent.captive(ip)
            response = await splash_page(portal, t, ip, state, code)
        await response(scope, receive, send)
