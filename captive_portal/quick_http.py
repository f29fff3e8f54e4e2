"""uvicorn's httptools protocol, answering what captive_portal.fastpath knows at once.

Through ASGI each request costs an asyncio task, an Event, a dozen messages and header
checks: for an OS probe, most of its CPU (bench/bench_portal.py). When the device's state
is cached, a probe's or the splash's answer needs no wait: it is written here, from the
parser's callback, in one write, with uvicorn's default headers (``date``) and its
keep-alive handling. Any other request, or one whose answer needs the agent, starts its
ASGI task as uvicorn would. This overrides ``HttpToolsProtocol._start_asgi_task``
(uvicorn >= 0.30); on a uvicorn without it, the stock protocol is used and every request
takes the ASGI path (slower, same answers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from captive_portal.responses import Raw

log = logging.getLogger(__name__)

Quick = Callable[[Scope], Raw | None]
# Answers written per read from one connection: a client pipelining thousands of requests
# in one segment would otherwise hold the loop for all of them, while on the ASGI path
# uvicorn queues them and stops reading. Phones' browsers do not pipeline.
QUICK_PER_READ = 16


def quick_protocol(quick: Quick) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, answering through ``quick``."""
    if not hasattr(HttpToolsProtocol, "_start_asgi_task"):
        log.warning("uvicorn without _start_asgi_task: every request takes the ASGI path")
        return HttpToolsProtocol

    class QuickHttp(HttpToolsProtocol):
        quick_left = QUICK_PER_READ

        def data_received(self, data: bytes) -> None:
            self.quick_left = QUICK_PER_READ
            super().data_received(data)

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            raw = None
            # not uvicorn's 503 for too many connections; and not while the client reads
            # nothing back: the ASGI path waits for its buffer to drain before the next
            # pipelined request, this one would buffer answers without bound
            if app is self.app and not self.flow.write_paused and self.quick_left > 0:
                try:
                    raw = quick(cycle.scope)
                except Exception:  # the ASGI path will answer (a 500 if it fails too)
                    log.exception("fast answer failed for %s", cycle.scope.get("path"))
            if raw is None:
                super()._start_asgi_task(cycle, app)
                return
            status, headers, body = raw
            out = [STATUS_LINE[status]]
            for name, value in (*self.server_state.default_headers, *headers):
                out += (name, b": ", value, b"\r\n")
            if not cycle.keep_alive:
                out.append(b"connection: close\r\n")
            out += (b"\r\n", body)
            self.quick_left -= 1
            cycle.response_started = cycle.response_complete = True
            self.transport.write(b"".join(out))
            if not cycle.keep_alive:
                self.transport.close()
            cycle.on_response()

    return QuickHttp
