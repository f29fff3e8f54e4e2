"""The upstream "internet" web server: static files with Range, a byte counter, and :443.

Run inside the upstream namespace by the lab. Range support and ``/bytes/N`` (N bytes of
payload, for quota and shaping tests) are what later tests need from "the internet";
``/stats`` reports the payload bytes sent, so tests can check what really left upstream.
The TLS port is a plain TCP listener: the hub must refuse HTTPS before login with a reset,
which a test sees as "connection refused" whatever the listener speaks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SENT = {"bytes": 0}
_LOCK = threading.Lock()
CHUNK = 64 * 1024


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _count(self, n: int) -> None:
        with _LOCK:
            SENT["bytes"] += n

    def do_GET(self) -> None:
        if self.path == "/stats":
            body = json.dumps(SENT).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"x" * CHUNK
            left = n
            try:
                while left > 0:
                    k = min(left, CHUNK)
                    self.wfile.write(block[:k])
                    self._count(k)
                    left -= k
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            super().do_GET()
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            if a:
                start = int(a)
                end = int(b) if b else size - 1
            else:
                start = max(0, size - int(b))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(end, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        try:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        break
                    self.wfile.write(data)
                    self._count(len(data))
                    left -= len(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def tls_placeholder(port: int) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--tls-port", type=int, default=0)
    args = ap.parse_args()
    os.chdir(args.root)
    if args.tls_port:
        threading.Thread(target=tls_placeholder, args=(args.tls_port,), daemon=True).start()
    DualStackServer(("::", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
