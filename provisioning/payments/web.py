"""The providers' callback endpoint: ``POST /payments/callback/{paygate|fedapay}``.

The URL to give each provider's merchant dashboard is
``https://<controller>/payments/callback/<provider>``. The raw body is handed to the
service untouched (FedaPay signs the exact bytes). ``route(service, path, headers,
body)`` is the whole logic, so the controller's own web server can mount it at the same
path; ``serve`` runs it alone (``hubctl payments run``, the tests).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from provisioning.payments.service import PaymentService

PREFIX = "/payments/callback/"
MAX_BODY = 64 * 1024


def route(
    service: PaymentService, path: str, headers: Mapping[str, str], body: bytes
) -> tuple[int, str] | None:
    """(status, text) for a callback path, None for any other path."""
    path = urlsplit(path).path
    if not path.startswith(PREFIX):
        return None
    return service.handle_callback(path[len(PREFIX) :].strip("/"), headers, body)


class Server(ThreadingHTTPServer):
    # The standard backlog of 5 overflowed under 20 callbacks at once on a loaded box:
    # connections reset instead of queued.
    request_queue_size = 128
    daemon_threads = True


def serve(service: PaymentService, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "relais-payments"
        # Keep-alive: the callers' one HTTP client reuses the connection (no new connection
        # and server thread per status check or callback); idle ones close after 30 s.
        protocol_version = "HTTP/1.1"
        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, "too large")
                return
            body = self.rfile.read(length)
            answer = route(service, self.path, dict(self.headers.items()), body)
            self._answer(*(answer or (404, "not found")))

        def _answer(self, code: int, text: str) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = Server((host, port), Handler)
    threading.Thread(
        target=server.serve_forever, args=(0.1,), name="payments-web", daemon=True
    ).start()
    return server
