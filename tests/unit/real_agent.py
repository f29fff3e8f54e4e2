"""The portal's tests against the REAL agent: ``AgentHandler`` over ``SessionService`` on an
in-memory SQLite, served on the real socket server (hub_agent/api/server.py), wired as
hub_agent/daemon.py wires them (one worker thread owns the database and the kernel).

Only the machine is stood in for: the kernel is a recording one (grants held per MAC, with
byte counters the test feeds), the neighbour table is an IP->MAC dict, the health figures
are fixed and the clock is the test's. The test controls drive the agent's own code paths:
codes come from ``issue_local_vouchers`` or ``make_central_code``, traffic is folded by the
accounting pass (``sessions.loop.tick``), caretaker actions go through the handler.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI

from captive_portal.app import create_app
from captive_portal.security import hash_password
from captive_portal.settings import build_settings
from hub_agent.api.protocol import HealthView, Request, Response, SessionView
from hub_agent.api.server import start_server
from hub_agent.config import HubConfig, validate_config
from hub_agent.enforce.discovery import Device
from hub_agent.enforce.model import Counters, DesiredState, Grant
from hub_agent.handler import AgentHandler
from hub_agent.sessions import loop
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService
from hub_agent.sessions.vouchers import format_code, make_central_code, month_index
from hub_agent.store import open_db
from hub_agent.worker import PriorityWorker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hub.yaml"
VOUCHER_SECRET = "relais-test-voucher-secret-0001"  # so central codes verify on this hub


def config_dict(sock: Path, **portal: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["portal"]["agent_socket"] = str(sock)
    data["portal"].update(portal)
    data["trust"]["voucher_secret"] = VOUCHER_SECRET
    return data


def tls_config_dict(tmp_path: Path) -> dict[str, Any]:
    """config_dict with a certificate and key (placeholder files) and HTTPS on 8443."""
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    return config_dict(
        tmp_path / "s",
        tls_cert=str(tmp_path / "c.pem"),
        tls_key=str(tmp_path / "k.pem"),
        https_port=8443,
    )


def portal_config(sock: Path, **portal: Any) -> HubConfig:
    """examples/hub.yaml with the agent socket (and any portal settings) overridden."""
    return validate_config(config_dict(sock, **portal))


class FakeClock:
    def __init__(self) -> None:  # a Saturday morning in Lomé
        self.now = dt.datetime(2026, 3, 14, 9, 0, tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


class RecordingKernel:
    """What nftables would hold: one grant per MAC, with counters since it was granted.
    A re-grant (throttle) keeps the counters, as the real enforcement updates in place.
    ``hold()`` makes the next authorize wait, as a kernel change on a slow box does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.grants: dict[str, Grant] = {}
        self.bytes: dict[str, int] = {}
        self.active: set[str] = set()
        self.gate: threading.Event | None = None
        self.changed = threading.Condition()

    def hold(self) -> threading.Event:
        self.gate = threading.Event()
        return self.gate

    def wait_granted(self, mac: str, timeout: float = 10) -> Grant:
        with self.changed:
            assert self.changed.wait_for(lambda: mac in self.grants, timeout), mac
            return self.grants[mac]

    def authorize(self, grant: Grant) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.wait(10)
        with self.changed:
            self.calls.append(("authorize", grant.mac))
            self.bytes.setdefault(grant.mac, 0)
            self.grants[grant.mac] = grant
            self.changed.notify_all()

    def deauthorize(self, mac: str) -> None:
        with self.changed:
            self.calls.append(("deauthorize", mac))
            self.grants.pop(mac, None)
            self.bytes.pop(mac, None)
            self.changed.notify_all()

    def counters(self) -> Mapping[str, Counters]:
        out = {}
        for mac, n in self.bytes.items():
            quota = self.grants[mac].quota_bytes
            exhausted = quota is not None and n >= quota
            out[mac] = Counters(mac, 0, n, quota_exhausted=exhausted, active=mac in self.active)
        self.active.clear()
        return out

    def reconcile(self, state: DesiredState) -> object:
        self.grants = {g.mac: g for g in state.grants}
        return None


@dataclass
class RealAgent:
    config: HubConfig
    neighbours: dict[str, str]  # ip -> mac: what the kernel's neighbour table would say
    clock: FakeClock
    uplink_up: bool = True
    calls: list[str] = field(default_factory=list)  # the ops the portal asked
    kernel: RecordingKernel = field(default_factory=RecordingKernel)
    worker: PriorityWorker = field(default_factory=lambda: PriorityWorker("test-agent"))

    def __post_init__(self) -> None:
        # as the daemon does: the database is opened and used on the worker thread only
        self.service = self.run(lambda: SessionService(self.config, open_db(":memory:", SESSIONS)))
        self.handler = AgentHandler(
            self.service,
            self.kernel,
            mac_for_ip=self.neighbours.get,
            health=self.health,
            uplink_up=lambda: self.uplink_up,
            clock=self.clock,
            executor=self.worker,
        )

    async def serve(self, req: Request) -> Response:
        self.calls.append(req.op)
        return await self.handler(req)

    def run(self, fn: Any) -> Any:
        """``fn()`` on the agent's worker, after whatever the agent is doing."""
        return self.worker.submit(fn).result(timeout=15)

    # --- test controls ---------------------------------------------------------------------
    def issue(self, plan_id: str, expires_at: float | None = None) -> str:
        """A code the caretaker would print (XXXX-XXXX-XXXX)."""
        now = self.clock()
        codes = self.run(lambda: self.service.issue_local_vouchers(plan_id, 1, now, expires_at))
        return format_code(codes[0])

    def central(self, plan_id: str, serial: int = 1) -> str:
        """A code sold by the centre, valid until the end of next month; this hub has never
        seen it (it verifies it offline at login)."""
        month = month_index(self.clock(), self.config.hub.timezone) + 1
        return format_code(make_central_code(VOUCHER_SECRET.encode(), plan_id, month, serial))

    def ask(self, req: Request) -> Response:
        """The handler's answer, as if the portal asked (caretaker actions, revocation)."""
        return self.run(lambda: self.handler.handle(req))  # type: ignore[no-any-return]

    def use_bytes(self, mac: str, n: int) -> None:
        """Traffic through the kernel, then an accounting pass (as the daemon runs)."""

        def traffic() -> None:
            self.kernel.bytes[mac] += n
            self.kernel.active.add(mac)

        self.run(traffic)
        self.tick()

    def tick(self) -> None:
        now = self.clock()
        self.run(lambda: loop.tick(self.service, self.kernel, now=now))

    def revoke(self, code: str) -> None:
        now = self.clock()
        assert self.run(lambda: self.service.revoke(code, now))

    def discovered(self, mac: str, ip: str, hostname: str) -> None:
        """What discovery learns from DHCP (the name shown on the dashboard)."""
        dev = Device(mac, ip, hostname=hostname, last_seen=self.clock())
        self.run(lambda: self.service.record_devices([dev]))

    def session(self, mac: str) -> SessionView | None:
        now = self.clock()
        return self.run(lambda: self.service.session_view(mac, now))  # type: ignore[no-any-return]

    def health(self) -> HealthView:
        return HealthView(
            cpu_pct=12.6,
            mem_pct=41.0,
            disk_pct=63.0,
            temperature_c=48.5,
            uplink_up=self.uplink_up,
            uplink_latency_ms=35.0 if self.uplink_up else None,
            broker_connected=self.uplink_up,
            config_version=self.config.version,
            cache_used_mb=1234.5,
            cache_items=42,
        )

    def close(self) -> None:
        if self.kernel.gate is not None:
            self.kernel.gate.set()
        self.worker.shutdown(wait=True)

    def __enter__(self) -> RealAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AgentThread:
    """Runs the real socket server for the agent in its own thread and event loop, so sync
    clients (schemathesis, a browser, a subprocess) and the portal can all reach it."""

    def __init__(self, socket_path: Path, agent: RealAgent, group: str | None = None) -> None:
        self.socket_path = socket_path
        self.group = group
        self.agent = agent
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        # what the server still runs (the portal's long-poll Watch): ended, as asyncio.run
        # ends the daemon's
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await start_server(self.socket_path, self.agent.serve, group=self.group)
        self._ready.set()
        async with server:
            await self._stop.wait()
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> AgentThread:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("test agent did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.agent.kernel.gate is not None:
            self.agent.kernel.gate.set()
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(5)


# --- the harness: the real app over the real socket to the real agent --------------------

HUB_URL = "http://10.42.0.1:8080"
DEV1, MAC1 = "10.42.0.101", "02:00:00:00:01:01"
DEV2, MAC2 = "10.42.0.102", "02:00:00:00:01:02"
DEV3, MAC3 = "10.42.0.103", "02:00:00:00:01:03"
ADMIN_PASSWORD = "gardien-2026"
# A cheap scrypt cost keeps the tests fast; the format and code path are the real ones.
ADMIN_HASH = hash_password(ADMIN_PASSWORD, log2_n=10)
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


class PortalClient:
    """A device's browser: a sync face on httpx.AsyncClient over ASGITransport, with the
    device's IP as the client address (what nftables preserves), and its cookie jar."""

    def __init__(self, app: FastAPI, ip: str, base_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        self._client = httpx.AsyncClient(transport=transport, base_url=base_url)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._client.cookies

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.get(url, **kw))

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.post(url, **kw))

    def head(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._client.head(url, **kw))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@dataclass
class Hub:
    config: HubConfig
    agent: RealAgent
    app: FastAPI
    clock: FakeClock
    clients: list[PortalClient] = field(default_factory=list)

    def client(self, ip: str = DEV1, base_url: str = HUB_URL) -> PortalClient:
        c = PortalClient(self.app, ip, base_url)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()


@contextmanager
def running_hub(
    tmp_path: Path,
    *,
    agent_up: bool = True,
    extra_hosts: tuple[str, ...] = (),
    **portal: Any,
) -> Iterator[Hub]:
    sock = tmp_path / "agent.sock"
    portal.setdefault("admin_password_hash", ADMIN_HASH)
    config = portal_config(sock, **portal)
    clock = FakeClock()
    agent = RealAgent(config, {DEV1: MAC1, DEV2: MAC2, DEV3: MAC3}, clock)
    settings = build_settings(config, extra_hosts=extra_hosts)
    app = create_app(config, secret=b"s" * 32, settings=settings, clock=clock)
    hub = Hub(config, agent, app, clock)
    try:
        agent.discovered(MAC1, DEV1, "tecno-spark")
        if agent_up:
            with AgentThread(sock, agent):
                yield hub
        else:
            yield hub
    finally:
        hub.close()
        agent.close()


def csrf_of(html: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(c: PortalClient, code: str = "", method: str = "voucher", **extra: str) -> Any:
    token = csrf_of(c.get("/").text)
    data = {"method": method, "code": code, "csrf": token, **extra}
    return c.post("/login", data=data)
