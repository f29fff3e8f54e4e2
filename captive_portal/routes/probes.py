"""OS captive-portal probes: the exact success answer once authorised, else a redirect.

Each OS compares the body byte for byte; anything else (our 302) makes it open the login
sheet, and the next probe after the session ends redirects again so the sheet reappears.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Response

from captive_portal.agent import DeviceState
from captive_portal.deps import CaptiveDep, ClientIp, PortalDep
from captive_portal.responses import redirect

router = APIRouter()

APPLE_SUCCESS = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
FIREFOX_CANONICAL = (
    '<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'
)


@dataclass(frozen=True)
class ProbeAnswer:
    status: int
    body: str
    media_type: str


_204 = ProbeAnswer(204, "", "text/plain")
_APPLE = ProbeAnswer(200, APPLE_SUCCESS, "text/html")
PROBES: dict[str, ProbeAnswer] = {
    "/generate_204": _204,  # Android, Chrome
    "/gen_204": _204,
    "/hotspot-detect.html": _APPLE,  # iOS, macOS
    "/library/test/success.html": _APPLE,
    "/connecttest.txt": ProbeAnswer(200, "Microsoft Connect Test", "text/plain"),  # Windows 10+
    "/ncsi.txt": ProbeAnswer(200, "Microsoft NCSI", "text/plain"),  # older Windows
    "/canonical.html": ProbeAnswer(200, FIREFOX_CANONICAL, "text/html"),  # Firefox
    "/success.txt": ProbeAnswer(200, "success\n", "text/plain"),
}
PROBE_PATHS = frozenset(PROBES)


def probe_answer(answer: ProbeAnswer, state: DeviceState, splash_url: str) -> Response:
    """The route's and captive_portal.fastpath's answer to a probe."""
    if not state.authorised:  # unknown, expired, blocked or agent silent: captive
        return redirect(splash_url, 302)
    return Response(
        answer.body or None,
        status_code=answer.status,
        media_type=answer.media_type,
        headers={"Cache-Control": "no-store"},
    )


def _make(answer: ProbeAnswer, path: str) -> Callable[..., Awaitable[Response]]:
    async def probe(portal: PortalDep, ip: ClientIp, state: CaptiveDep) -> Response:
        return probe_answer(answer, state, portal.settings.splash_url(ip))

    probe.__name__ = "probe_" + path.strip("/").replace(".", "_").replace("/", "_")
    return probe


for _path, _answer in PROBES.items():
    router.add_api_route(
        _path,
        _make(_answer, _path),
        methods=["GET"],
        summary=f"OS probe {_path}",
        response_class=Response,
        responses={302: {"description": "not authorised: to the splash page"}},
    )
