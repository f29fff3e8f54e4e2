"""Requests for a foreign Host go to the splash page.

nftables redirects every unauthorised port-80 connection, whatever its Host, to the
portal; a browser asking http://example.com/anything must land on the portal's own
address (absolute URL) so cookies, forms and links are the portal's, not example.com's.
The OS probe paths are answered in place: their hosts are foreign by design.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send


class ForeignHostRedirect:
    def __init__(
        self,
        app: ASGIApp,
        *,
        is_own_host: Callable[[str | None], bool],
        # the current one for this client's IP: a pushed config may move it, and a phone
        # asking over IPv6 is sent to the portal's IPv6 address
        splash_url: Callable[[str], str],
        keep: frozenset[str],
    ) -> None:
        self.app = app
        self.is_own_host = is_own_host
        self.splash_url = splash_url
        self.keep = keep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.keep:
            await self.app(scope, receive, send)
            return
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        if self.is_own_host(host):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        location = self.splash_url(client[0] if client else "")
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
