"""Response helpers: every HTML page is uncached and locked down (no scripts, no frames)."""

from __future__ import annotations

from fastapi.responses import HTMLResponse, RedirectResponse

# No JavaScript anywhere; inline CSS only; forms post back to the portal itself.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HTML_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def html(
    body: str | bytes, status_code: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers={**HTML_HEADERS, **(headers or {})})


# status, headers, body: an answer as it goes on the wire (captive_portal.fastpath)
Raw = tuple[int, list[tuple[bytes, bytes]], bytes]
_HTML_RAW = html(b"").raw_headers  # what html() sends, content-length aside


def html_raw(body: bytes) -> Raw:
    """``html(body)`` (status 200) as it goes on the wire, without building a Response."""
    length = (b"content-length", b"%d" % len(body))
    return 200, [length if k == b"content-length" else (k, v) for k, v in _HTML_RAW], body


def redirect(url: str, status_code: int = 302) -> RedirectResponse:
    return RedirectResponse(url, status_code=status_code, headers={"Cache-Control": "no-store"})
