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
unchanged.

``QuickAnswers`` gives these answers without waiting when the device's state is cached
(the usual case in a crowd): captive_portal.quick_http writes them from the HTTP parser's
callback, without an asyncio task. ``FastPath`` (mounted by ``app.PortalApp``) answers the
same requests on the ASGI path, waiting on the agent when the cache cannot answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from captive_portal.agent import DeviceState
from captive_portal.deps import LANG_MAX, choose_translator
from captive_portal.i18n import Translator
from captive_portal.responses import Raw, html_raw
from captive_portal.routes.captive_api import captive_answer, captive_known
from captive_portal.routes.probes import PROBES, ProbeAnswer, probe_answer
from captive_portal.routes.splash import CODE_MAX, splash_known, splash_page
from captive_portal.services import Portal

API_PATH = "/api/captive"


@dataclass(frozen=True, slots=True)
class Ask:
    """A request the fast path answers: a probe, the splash, or the RFC 8908 API."""

    ip: str  # as deps.get_client_ip: nftables keeps the source
    head: bool = False
    probe: ProbeAnswer | None = None
    path: str = ""  # the probe's
    splash: Translator | None = None  # the splash, in this language
    code: str = ""  # the splash's ?code=
    api: bool = False  # the RFC 8908 API


class QuickAnswers:
    """Which requests the fast path takes, and their answers from a known device state."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self._probes: dict[tuple[str, bool, str], Raw] = {}

    def ask(self, scope: Scope) -> Ask | None:
        """What ``scope`` asks, or None: FastAPI answers it."""
        method, path = scope["method"], scope["path"]
        client = scope.get("client")
        ip = client[0] if client else ""
        probe = PROBES.get(path)
        if probe is not None:
            return Ask(ip, method == "HEAD", probe, path) if method in ("GET", "HEAD") else None
        if method != "GET" or path not in ("/", API_PATH):
            return None
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if not self.portal.settings.is_own_host(host.decode("latin-1") if host else None):
            return None  # hostcheck redirects a foreign host
        if path == API_PATH:
            return Ask(ip, api=True)
        # the route's query: last value wins, blanks kept (as Starlette parses it)
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
        lang, code = query.get("lang"), query.get("code", "")
        if len(code) > CODE_MAX or (lang is not None and len(lang) > LANG_MAX):
            return None  # FastAPI's 422, as documented
        accept = next((v for k, v in scope["headers"] if k == b"accept-language"), None)
        t = choose_translator(self.portal, lang, accept.decode("latin-1") if accept else None)
        return Ask(ip, splash=t, code=code)

    def probe(self, ask: Ask, state: DeviceState) -> Raw:
        """A probe's answer (the route's bytes, built once per state and splash URL: one
        per address family)."""
        assert ask.probe is not None
        key = (ask.path, state.authorised, self.portal.settings.splash_url(ask.ip))
        raw = self._probes.get(key)
        if raw is None:
            if len(self._probes) > 64:  # the base URLs moved often: start afresh
                self._probes.clear()
            r = probe_answer(ask.probe, state, key[2])
            raw = self._probes[key] = (r.status_code, r.raw_headers, bytes(r.body))
        return (raw[0], raw[1], b"") if ask.head else raw

    def __call__(self, scope: Scope) -> Raw | None:
        """The answer now, when the device's state is cached; else None (the ASGI path)."""
        ask = self.ask(scope)
        if ask is None:
            return None
        if ask.api:  # shows usage: a fresher state than "through or not"
            fresh = self.portal.agent.known(ask.ip)
            api = None if fresh is None else captive_known(self.portal, ask.ip, fresh)
            return None if api is None else (api.status_code, api.raw_headers, bytes(api.body))
        state = self.portal.agent.captive_known(ask.ip)
        if state is None:
            return None
        if ask.probe is not None:
            return self.probe(ask, state)
        assert ask.splash is not None
        body = splash_known(self.portal, ask.splash, ask.ip, state, ask.code)
        return None if body is None else html_raw(body)


class FastPath:
    def __init__(self, app: ASGIApp, *, quick: QuickAnswers) -> None:
        self.app = app
        self.quick = quick

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ask = self.quick.ask(scope) if scope["type"] == "http" else None
        if ask is None:
            await self.app(scope, receive, send)
            return
        portal = self.quick.portal
        if ask.api:  # shows usage: a fresher state than "through or not"
            api = await captive_answer(portal, ask.ip, await portal.agent.whoami(ask.ip))
            await api(scope, receive, send)
            return
        state = await portal.agent.captive(ask.ip)
        if ask.probe is not None:
            status, headers, body = self.quick.probe(ask, state)
        else:
            assert ask.splash is not None
            page = await splash_page(portal, ask.splash, ask.ip, state, ask.code)
            status, headers, body = page.status_code, page.raw_headers, bytes(page.body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
