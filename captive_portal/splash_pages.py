"""The splash page rendered once per language and device state, filled per request.

Every captive phone asks for the splash again and again; rendering Jinja2 for each of those
requests made it the portal's most expensive page. The page differs between requests only
by what ``render.splash_key`` names (language, through or not, banners, the mobile-money
box) and by three holes: the login form's CSRF token, the mobile-money form's, and a
voucher code given in the link. Pages are rendered with markers in those holes, split
there once, and joined with the request's values: the bytes are those a full rendering
gives (the code is escaped as Jinja2's autoescape escapes it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from markupsafe import escape

from captive_portal.agent import DeviceState
from captive_portal.i18n import Translator
from captive_portal.render import Renderer, splash_context, splash_key
from captive_portal.settings import Settings

_MARK = "\ue000"  # a private-use character: autoescape keeps it, no catalogue holds it
_HOLE = re.compile(f"{_MARK}(csrf|pay|code){_MARK}")


def _hole(name: str) -> str:
    return f"{_MARK}{name}{_MARK}"


@dataclass
class SplashPages:
    """Pre-rendered splash pages of one settings object (a pushed config clears them)."""

    _settings: Settings | None = None
    _pages: dict[tuple[object, ...], list[bytes]] = field(default_factory=dict)

    def page(
        self,
        renderer: Renderer,
        settings: Settings,
        t: Translator,
        state: DeviceState | None,
        offer: dict[str, Any] | None,
        *,
        csrf: str,
        code: str = "",
    ) -> bytes:
        """The splash for this device (UTF-8): ``offer`` is ``routes.pay.pay_offer``'s box."""
        if settings is not self._settings:
            self._pages.clear()
            self._settings = settings
        key = (t.lang, offer is not None, *splash_key(state, t))
        parts = self._pages.get(key)
        if parts is None:  # language x state x offer: a handful of pages per config
            ctx = splash_context(settings, t, state, csrf=_hole("csrf"), code=_hole("code"))
            ctx["pay"] = None if offer is None else {**offer, "csrf": _hole("pay")}
            page = _HOLE.split(renderer.page("splash.html", ctx))
            parts = self._pages[key] = [p.encode() for p in page]  # encoded once
        fill = {
            b"csrf": csrf.encode(),
            b"pay": offer["csrf"].encode() if offer else b"",
            b"code": str(escape(code)).encode(),
        }
        out = parts[:]
        for i in range(1, len(out), 2):  # split() puts the holes' names at odd places
            out[i] = fill[out[i]]
        return b"".join(out)
