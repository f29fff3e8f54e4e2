"""The fleet web server: stdlib ThreadingHTTPServer over the registry (read-only).

Routes: ``/`` (map + table: ``?q=&region=&kind=&state=&config=&sort=&desc=1&page=&per=``,
``?lang=fr|en`` or Accept-Language), ``/hubs/<id>`` (state, desired vs running config,
push history, health charts, events in words, gaps, recent payments), ``/api/fleet.json``
(the fleet page's parameters; one page, its total and the next page's link). Each request
opens its own read connection: WAL lets pages read while the ingest writer commits
(PostgreSQL: MVCC does the same).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from provisioning import fleet, registry, vouchers
from provisioning.controller import fleet_query, fleet_sales, pages
from provisioning.storage import Database, DbUrl, connect

HISTORY_S = 24 * 3600.0


def _read_db(path: Path | str | DbUrl) -> Database:
    return connect(path)  # the registry exists: the controller opened (migrated) it


def make_handler(
    db_path: Path | str | DbUrl, clock: Callable[[], float] = time.time
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "relais-controller"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log spam
            pass

        def _send(self, code: int, body: str, ctype: str = "text/html; charset=utf-8") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:",
            )
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = url.path
            params = parse_qs(url.query)
            lang = pages.choose_lang(
                (params.get("lang") or [""])[0], self.headers.get("Accept-Language")
            )
            now = clock()
            db = _read_db(db_path)
            try:
                if path == "/":
                    query = fleet_query.FleetQuery.from_params(params)
                    view = fleet_query.fleet_view(db, query, now)
                    findings = vouchers.findings_for(db)
                    sales = fleet_sales.sales_view(
                        db, view.query, now, now - fleet.STALE_AFTER_S, pages.TZ.key
                    )
                    self._send(200, pages.fleet_page(view, now, findings, lang, sales))
                elif path == "/api/fleet.json":
                    query = fleet_query.FleetQuery.from_params(params)
                    body = fleet_query.fleet_json(db, query, now)
                    self._send(200, json.dumps(body), "application/json")
                elif path.startswith("/hubs/"):
                    hub_id = unquote(path[len("/hubs/") :])
                    row = registry.get_hub(db, hub_id)
                    if row is None:
                        self._send(404, "<h1>no such hub / point d'accès inconnu</h1>")
                        return
                    gaps = fleet_query.hub_gaps(db, hub_id)
                    self._send(
                        200,
                        pages.hub_page(
                            fleet.fleet_row(row, now),
                            registry.health_series(db, hub_id, now - HISTORY_S),
                            registry.recent_events(db, hub_id),
                            gaps,
                            now,
                            fleet_query.push_history(db, hub_id),
                            row,
                            lang,
                            fleet_sales.recent_payments(db, hub_id),
                        ),
                    )
                else:
                    self._send(404, "<h1>not found</h1>")
            finally:
                db.close()

    return Handler


def serve(
    db_path: Path | str | DbUrl, host: str, port: int, clock: Callable[[], float] = time.time
) -> ThreadingHTTPServer:
    """Start the page server in a daemon thread; ``.shutdown()`` stops it. ``clock``: what
    "now" and "today" are (a test's data and its pages agree across midnight)."""
    server = ThreadingHTTPServer((host, port), make_handler(db_path, clock))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fleet-web", daemon=True).start()
    return server
