"""A TEST agent for the portal's tests: the protocol's semantics, kept in memory.

Being retired (issue 15): the portal's tests run against the real agent
(tests/unit/real_agent.py). Only tests/unit/test_portal_pay.py still uses this; delete this
file once that test is ported. Do not add new users.

It serves the real socket server (hub_agent/api/server.py) with the real protocol models,
so the portal under test talks to it exactly as it will talk to the real hub-agent. Only
the state is fake: devices come from a given IP->MAC table instead of the kernel, and
sessions/vouchers live in dicts instead of SQLite and nftables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
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
from hub_agent.api.protocol import (
    Block,
    DeviceView,
    Disconnect,
    Health,
    HealthView,
    IssueVouchers,
    ListDevices,
    Login,
    Logout,
    Request,
    Response,
    SessionView,
    Whoami,
)
from hub_agent.api.server import start_server
from hub_agent.config import HubConfig, validate_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hub.yaml"
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def config_dict(sock: Path, **portal: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["portal"]["agent_socket"] = str(sock)
    data["portal"].update(portal)
    return data


def portal_config(sock: Path, **portal: Any) -> HubConfig:
    """examples/hub.yaml with the agent socket (and any portal settings) overridden."""
    return validate_config(config_dict(sock, **portal))


def normalise_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


@dataclass
class Voucher:
    code: str
    plan_id: str
    revoked: bool = False
    expires_at: float | None = None  # voucher sale validity (before first use)
    first_used_at: float | None = None
    macs: set[str] = field(default_factory=set)
    bytes_used: int = 0


@dataclass
class Session:
    plan_id: str
    plan_name: dict[str, str]
    down_kbit: int
    up_kbit: int
    data_quota: int | None
    ends_at: float | None
    started_at: float
    voucher: str | None = None
    bytes_used: int = 0
    state: str = "authorised"
    ended_reason: str | None = None


@dataclass
class MemoryAgent:
    config: HubConfig
    neighbours: dict[str, str]  # ip -> mac, what the kernel's neighbour table would say
    clock: Callable[[], float] = time.time
    vouchers: dict[str, Voucher] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    free_days: set[tuple[str, str]] = field(default_factory=set)
    hostnames: dict[str, str] = field(default_factory=dict)
    uplink_up: bool = True
    calls: list[str] = field(default_factory=list)

    # --- test controls -----------------------------------------------------------------
    def add_voucher(self, code: str, plan_id: str, **kw: Any) -> str:
        self.config.plan(plan_id)  # KeyError on a typo in a test
        self.vouchers[normalise_code(code)] = Voucher(normalise_code(code), plan_id, **kw)
        return code

    def use_bytes(self, mac: str, n: int) -> None:
        """Account traffic as the enforcement would, ending or throttling at the quota."""
        s = self.sessions[mac]
        s.bytes_used += n
        if s.data_quota is not None and s.bytes_used >= s.data_quota:
            plan = None if s.plan_id == "free" else self.config.plan(s.plan_id)
            if plan is not None and plan.on_exhaustion == "throttle":
                s.state = "throttled"
                s.down_kbit = s.up_kbit = plan.throttle_kbit
            else:
                self._end(mac, "data_quota")

    def end(self, mac: str, reason: str) -> None:
        self._end(mac, reason)

    # --- the protocol --------------------------------------------------------------------
    async def handle(self, req: Request) -> Response:
        self.calls.append(req.op)
        self._expire()
        if isinstance(req, Whoami):
            mac = self.neighbours.get(req.ip)
            if mac is None:
                return Response(ok=False, error="unknown_device", uplink_up=self.uplink_up)
            return Response(ok=True, device=self._view(mac), uplink_up=self.uplink_up)
        if isinstance(req, Login):
            return self._login(req)
        if isinstance(req, Logout):
            mac = self.neighbours.get(req.ip)
            if mac is None:
                return Response(ok=False, error="unknown_device")
            ended = self._end(mac, "logout")
            return Response(ok=ended, error=None if ended else "no_session")
        if isinstance(req, ListDevices):
            return Response(ok=True, devices=[self._view(m) for m in self.neighbours.values()])
        if isinstance(req, Health):
            return Response(ok=True, health=self.health())
        if isinstance(req, Disconnect):
            ok = self._end(req.mac, "caretaker")
            return Response(ok=ok, error=None if ok else "no_session")
        if isinstance(req, Block):
            if req.blocked:
                self.blocked.add(req.mac)
                self._end(req.mac, "blocked")
            else:
                self.blocked.discard(req.mac)
            return Response(ok=True)
        if isinstance(req, IssueVouchers):
            try:
                self.config.plan(req.plan_id)
            except KeyError:
                return Response(ok=False, error="unknown_plan")
            codes = []
            for _ in range(req.count):
                raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
                codes.append(self.add_voucher(f"{raw[:4]}-{raw[4:]}", req.plan_id))
            return Response(ok=True, vouchers=codes)
        return Response(ok=False, error="bad_request")

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

    def _login(self, req: Login) -> Response:
        mac = self.neighbours.get(req.ip)
        if mac is None:
            return Response(ok=False, error="unknown_device")
        if mac in self.blocked:
            return Response(ok=False, error="blocked")
        if req.method not in self.config.portal.login_methods:
            return Response(ok=False, error="method_disabled")
        now = self.clock()
        if req.method == "free":
            day = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
            if (mac, day) in self.free_days:
                return Response(ok=False, error="free_used_today")
            self.free_days.add((mac, day))
            f = self.config.free_tier
            self.sessions[mac] = Session(
                "free",
                {"fr": "Accès gratuit", "en": "Free access"},
                f.down_kbit,
                f.up_kbit,
                f.daily_mb * 1_000_000,
                None,
                now,
            )
            return Response(ok=True, device=self._view(mac), uplink_up=self.uplink_up)
        v = self.vouchers.get(normalise_code(req.code or ""))
        if v is None:
            return Response(ok=False, error="unknown_code")
        if v.revoked:
            return Response(ok=False, error="revoked")
        plan = self.config.plan(v.plan_id)
        if v.first_used_at is None and v.expires_at is not None and now >= v.expires_at:
            return Response(ok=False, error="expired")
        started, minutes = v.first_used_at, plan.time_quota_min
        if started is not None and minutes is not None and now >= started + minutes * 60:
            return Response(ok=False, error="expired")
        if mac not in v.macs and len(v.macs) >= plan.devices_per_voucher:
            return Response(ok=False, error="used_up")
        if plan.data_quota_mb is not None and v.bytes_used >= plan.data_quota_mb * 1_000_000:
            return Response(ok=False, error="used_up")
        v.first_used_at = v.first_used_at or now
        v.macs.add(mac)
        ends = v.first_used_at + plan.time_quota_min * 60 if plan.time_quota_min else None
        self.sessions[mac] = Session(
            plan.id,
            dict(plan.name),
            plan.down_kbit,
            plan.up_kbit,
            plan.data_quota_mb * 1_000_000 if plan.data_quota_mb else None,
            ends,
            now,
            voucher=v.code,
        )
        return Response(ok=True, device=self._view(mac), uplink_up=self.uplink_up)

    def _end(self, mac: str, reason: str) -> bool:
        s = self.sessions.get(mac)
        if s is None or s.state not in ("authorised", "throttled"):
            return False
        s.state = "expired" if reason in ("data_quota", "time_quota") else "ended"
        s.ended_reason = reason
        return True

    def _expire(self) -> None:
        now = self.clock()
        for mac, s in self.sessions.items():
            if s.ends_at is not None and now >= s.ends_at:
                self._end(mac, "time_quota")

    def _view(self, mac: str) -> DeviceView:
        ip = next((i for i, m in self.neighbours.items() if m == mac), None)
        s = self.sessions.get(mac)
        view = None
        if s is not None:
            now = self.clock()
            view = SessionView(
                state=s.state,
                plan_id=s.plan_id,
                plan_name=s.plan_name,
                down_kbit=s.down_kbit,
                up_kbit=s.up_kbit,
                bytes_used=s.bytes_used,
                bytes_remaining=None
                if s.data_quota is None
                else max(0, s.data_quota - s.bytes_used),
                seconds_remaining=None if s.ends_at is None else max(0, math.ceil(s.ends_at - now)),
                started_at=s.started_at,
                ended_reason=s.ended_reason,
            )
        return DeviceView(
            mac=mac,
            ip=ip,
            hostname=self.hostnames.get(mac),
            last_seen=self.clock(),
            blocked=mac in self.blocked,
            staff=mac in {d.mac for d in self.config.staff.devices},
            session=view,
        )


class AgentThread:
    """Runs the real socket server for ``handler`` in its own thread and event loop, so
    sync clients (schemathesis, a browser) and the portal can all reach it."""

    def __init__(self, socket_path: Path, agent: MemoryAgent, group: str | None = None) -> None:
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
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await start_server(self.socket_path, self.agent.handle, group=self.group)
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
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(5)


# --- the harness: the real app over the real socket to this test agent ----------------

HUB_URL = "http://10.42.0.1:8080"
DEV1, MAC1 = "10.42.0.101", "02:00:00:00:01:01"
DEV2, MAC2 = "10.42.0.102", "02:00:00:00:01:02"
DEV3, MAC3 = "10.42.0.103", "02:00:00:00:01:03"
ADMIN_PASSWORD = "gardien-2026"
# A cheap scrypt cost keeps the tests fast; the format and code path are the real ones.
ADMIN_HASH = hash_password(ADMIN_PASSWORD, log2_n=10)
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
    agent: MemoryAgent
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
    tmp_path: Path, *, agent_up: bool = True, extra_hosts: tuple[str, ...] = (), **portal: Any
) -> Iterator[Hub]:
    sock = tmp_path / "agent.sock"
    portal.setdefault("admin_password_hash", ADMIN_HASH)
    config = portal_config(sock, **portal)
    agent = MemoryAgent(config, {DEV1: MAC1, DEV2: MAC2, DEV3: MAC3})
    agent.hostnames[MAC1] = "tecno-spark"
    clock = FakeClock()
    settings = build_settings(config, extra_hosts=extra_hosts)
    app = create_app(config, secret=b"s" * 32, settings=settings, clock=clock)
    hub = Hub(config, agent, app, clock)
    try:
        if agent_up:
            with AgentThread(sock, agent):
                yield hub
        else:
            yield hub
    finally:
        hub.close()


def csrf_of(html: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(c: PortalClient, code: str = "", method: str = "voucher", **extra: str) -> Any:
    token = csrf_of(c.get("/").text)
    data = {"method": method, "code": code, "csrf": token, **extra}
    return c.post("/login", data=data)
