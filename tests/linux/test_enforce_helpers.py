"""Shared lab helpers for the enforcement tests (no tests of its own)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub_agent.config import HubConfig, load_config, validate_config
from hub_agent.enforce.model import Grant
from lab.netns import DOMAINS, HUB_LAN, Client, Lab
from tests.conftest import require_lab

ROOT = Path(__file__).resolve().parents[2]
WALLED_CIDR_IP = DOMAINS["cdn.example.test"]  # reachable before login (CIDR)
WALLED_DOMAIN = "service-public.gouv.tg"  # reachable before login once resolved by the hub
ZERO_RATED_IP = DOMAINS["example.test"]  # uncounted after login
PORTAL_MARK = "RELAIS-PORTAL-PAGE"


def lab_config(lab: Lab, **overrides: Any) -> HubConfig:
    data = load_config(ROOT / "examples" / "hub.yaml", env={}).to_wire()
    data["data_dir"] = str(lab.workdir / "data")
    data["walled_garden"] = {"domains": [WALLED_DOMAIN], "cidrs": [f"{WALLED_CIDR_IP}/32"]}
    data["zero_rated"] = {"domains": [], "cidrs": [f"{ZERO_RATED_IP}/32", f"{HUB_LAN}/32"]}
    data["staff"] = {"guaranteed_share_pct": None, "devices": []}
    for key, value in overrides.items():
        data[key] = value
    return validate_config(data)


def grant(c: Client, down: int = 50_000, up: int = 50_000, **kw: Any) -> Grant:
    return Grant(mac=c.mac, ip=c.ip, down_kbit=down, up_kbit=up, ip6=(c.ip6,), **kw)


_PORTAL = f"""
import socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"{PORTAL_MARK}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
S(("::", int(sys.argv[1])), H).serve_forever()
"""


def start_portal(lab: Lab, port: int = 8080) -> None:
    """A stand-in portal in the hub namespace, to see where redirected HTTP lands."""
    lab.spawn(lab.hub_ns, sys.executable, "-c", _PORTAL, str(port), log="portal.log")
    lab.wait_port(lab.hub_ns, HUB_LAN, port)


@contextmanager
def lab_with_portal(clients: int) -> Iterator[Lab]:
    """A lab without NAT (the enforcer's own table must do it) and the stand-in portal."""
    require_lab()
    with Lab.create(clients=clients, nat=False) as built:
        start_portal(built)
        yield built


def reaches(c: Client, url: str, timeout: float = 2) -> bool:
    """True when the upstream web server itself answered (not the portal, not an error)."""
    r = c.curl(url, timeout=timeout)
    return r.returncode == 0 and "upstream internet" in r.stdout


def wait_until(pred: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())
