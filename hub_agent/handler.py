"""Answers the portal's requests: sessions decide, enforcement applies, in that order.

The handler is the only place where a login turns into kernel state, so the rule "the
database says authorised <=> the kernel lets it through" has one home: the session is
written and the device authorised in the kernel inside one database transaction, committed
only once the kernel said yes. A kernel refusal rolls the login back (the code is not
consumed) and puts the device's kernel state back as the database has it; a crash before
the commit leaves an extra kernel device that the reconcile on start removes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar, cast

from hub_agent.api.protocol import (
    Block,
    CaretakerInfo,
    DeviceView,
    Disconnect,
    Health,
    HealthView,
    IssueVouchers,
    ListDevices,
    Login,
    Logout,
    NameDevice,
    Pay,
    PayStatus,
    PortalListen,
    Request,
    Response,
    Watch,
    Whoami,
)
from hub_agent.caretaker import Desk
from hub_agent.config import normalise_mac
from hub_agent.enforce.model import Grant
from hub_agent.portal_follow import PortalFollow
from hub_agent.purchases import Purchases
from hub_agent.radius import RadiusUnavailable
from hub_agent.roaming import Asked
from hub_agent.sessions.accounts import Terms
from hub_agent.sessions.attempts import WRONG_CODE, Verdict, warn
from hub_agent.sessions.interface import Sessions
from hub_agent.sessions.vouchers import typo_position

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Kernel(Protocol):
    def authorize(self, grant: Grant) -> None: ...
    def deauthorize(self, mac: str) -> None: ...


class Radius(Protocol):
    """Login method ``account`` (hub_agent/accounts.py)."""

    def offered(self) -> bool: ...
    async def authenticate(
        self, username: str, password: str, mac: str, ip: str
    ) -> Terms | None: ...
    def standing(self, mac: str, now: float) -> tuple[bool, Verdict]: ...
    def sync(self) -> None: ...


class Roaming(Protocol):
    """Central codes' balances from the centre (hub_agent/roaming_link.py)."""

    async def before_login(self, code: str) -> Asked | None: ...


class AgentHandler:
    purchases: Purchases | None = None  # mobile money (hub_agent/purchases.py)
    roaming: Roaming | None = None  # roaming balances (hub_agent/roaming_link.py)
    accounts: Radius | None = None  # accounts through RADIUS (hub_agent/accounts.py)
    portal: PortalFollow | None = None  # the portal's word on moving its listeners

    def __init__(
        self,
        sessions: Sessions,
        kernel: Kernel,
        mac_for_ip: Callable[[str], str | None],
        health: Callable[[], HealthView],
        uplink_up: Callable[[], bool],
        on_event: Callable[..., None] = lambda *a, **k: None,
        clock: Callable[[], float] = time.time,
        executor: Executor | None = None,
        caretaker: Desk | None = None,
    ) -> None:
        self.caretaker = caretaker  # names, sales, hourly data, hub's own MACs
        self.executor = executor
        self.sessions = sessions
        self.kernel = kernel
        self.mac_for_ip = mac_for_ip
        self.health = health
        self.uplink_up = uplink_up
        self.on_event = on_event
        self.clock = clock

    async def __call__(self, req: Request) -> Response:
        # Sessions (SQLite) and the kernel (pyroute2's sync API, nft) block: they run on the
        # agent's one worker thread, which also serialises them; the loop stays free.
        if isinstance(req, Watch):  # a long poll: on the loop, never on the worker
            changes = getattr(self.sessions, "changes", None)
            if changes is None:
                return Response(ok=False, error="bad_request")
            if self.portal is not None:
                self.portal.seen()  # a portal is running and following
            gen, changed = await changes.wait(req.since, req.wait_s)
            return Response(ok=True, generation=gen, changed=changed)
        if isinstance(req, PortalListen):
            if self.portal is not None:
                self.portal.said(req.version, req.error)
            return Response(ok=True)
        # A PriorityWorker runs them ahead of the agent's queued periodic passes.
        if isinstance(req, Login) and req.method == "account" and self.accounts is not None:
            return await self._account_login(req, self.accounts)
        if isinstance(req, Login) and req.method == "voucher" and self.roaming is not None:
            # the centre's balance first, on the loop; then the login on the worker
            balance = await self.roaming.before_login(req.code or "")
            if balance is not None:
                return await self._work(lambda: self._login(req, self.clock(), balance=balance))
        return await self._work(self.handle, req)

    def _generation(self) -> int | None:
        changes = getattr(self.sessions, "changes", None)
        return int(changes.generation) if changes is not None else None

    async def _work(self, fn: Callable[..., _T], *args: object) -> _T:
        urgent = getattr(self.executor, "submit_urgent", None)
        if urgent is not None:
            return cast(_T, await asyncio.wrap_future(urgent(fn, *args)))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def _account_login(self, req: Login, radius: Radius) -> Response:
        """One trip through the worker, as a voucher login: the gate in a thread (the
        neighbour table and a read-only look at the database, never queued behind a periodic
        pass), RADIUS on the loop (the worker never waits on the network), then the login,
        its accounting Start and its kernel change in one transaction on the worker."""
        mac = await asyncio.to_thread(self._account_gate, req, radius)
        if isinstance(mac, Response):
            return mac
        assert req.username is not None and req.password is not None  # the gate checked
        try:
            terms = await radius.authenticate(
                req.username, req.password.get_secret_value(), mac, req.ip
            )
        except RadiusUnavailable:
            return Response(ok=False, error="radius_unavailable", uplink_up=self.uplink_up())
        return await self._work(
            lambda: self._login(req, self.clock(), account=terms, record=radius.sync)
        )

    def _account_gate(self, req: Login, radius: Radius) -> Response | str:
        """The device's MAC, or why no RADIUS request should be sent for it (any thread)."""
        mac = self.mac_for_ip(req.ip)
        if mac is None:
            return Response(ok=False, error="unknown_device", uplink_up=self.uplink_up())
        if not radius.offered():
            return Response(ok=False, error="method_disabled")
        if not req.username or req.password is None:
            return Response(ok=False, error="bad_request")
        blocked, v = radius.standing(mac, self.clock())
        if blocked:
            return Response(ok=False, error="blocked")
        if v.retry_after:
            return Response(ok=False, error="rate_limited", retry_after=v.retry_after)
        return mac

    def handle(self, req: Request) -> Response:
        now = self.clock()
        match req:
            case Whoami(ip=ip):
                return self._whoami(ip, now)
            case Login():
                return self._login(req, now)
            case Logout(ip=ip):
                mac = self.mac_for_ip(ip)
                if mac is None:
                    return Response(ok=False, error="unknown_device")
                self.sessions.logout(mac, now)
                self.kernel.deauthorize(mac)
                self.on_event("device_deauthorised", mac=mac, reason="logout")
                return self._whoami(ip, now)
            case ListDevices():
                return Response(ok=True, devices=self.sessions.device_views(now))
            case Health():
                return Response(ok=True, health=self.health(), uplink_up=self.uplink_up())
            case Pay() if self.purchases is not None:
                return self.purchases.pay(req, self.mac_for_ip(req.ip), now)
            case PayStatus() if self.purchases is not None:
                return self.purchases.status(req, self.mac_for_ip(req.ip), now)
            case Disconnect(mac=mac):
                mac = normalise_mac(mac)
                self.sessions.end(mac, "caretaker", now)
                self.kernel.deauthorize(mac)
                self.on_event("device_deauthorised", mac=mac, reason="caretaker")
                return Response(ok=True)
            case Block(mac=mac, blocked=True) if self.caretaker and self.caretaker.is_hub(mac):
                return Response(ok=False, error="own_hub")  # the hub never blocks itself
            case Block(mac=mac, blocked=blocked):
                mac = normalise_mac(mac)
                self.sessions.block(mac, blocked, now)
                if blocked:
                    self.kernel.deauthorize(mac)
                return Response(ok=True)
            case IssueVouchers(plan_id=plan_id, count=count):
                try:
                    codes = self.sessions.issue_local_vouchers(plan_id, count, now)
                except KeyError:
                    return Response(ok=False, error="unknown_plan")
                return Response(ok=True, vouchers=codes)
            case NameDevice(mac=mac, name=name) if self.caretaker is not None:
                try:
                    self.caretaker.name_device(mac, name)
                except ValueError:
                    return Response(ok=False, error="bad_mac")
                return Response(ok=True)
            case CaretakerInfo() if self.caretaker is not None:
                return Response(ok=True, caretaker=self.caretaker.view(now))
        return Response(ok=False, error="bad_request")  # pragma: no cover - exhaustive

    def _restore(self, mac: str, grant: Grant | None) -> None:
        """After a failed login, the kernel as the (rolled back) database says."""
        try:
            if grant is None:
                self.kernel.deauthorize(mac)
            else:
                self.kernel.authorize(grant)
        except Exception:  # the next reconcile repairs what this could not
            log.exception("restoring %s after a failed login", mac)

    def _whoami(self, ip: str, now: float) -> Response:
        mac = self.mac_for_ip(ip)
        up = self.uplink_up()
        # mobile money's offer rides along: the splash needs no second round trip
        pay = self.purchases.offered() if self.purchases is not None else None
        if mac is None:
            return Response(ok=False, error="unknown_device", uplink_up=up, pay_online=pay)
        self.sessions.seen(mac, ip, now)
        device = DeviceView(
            mac=mac,
            ip=ip,
            blocked=self.sessions.is_blocked(mac),
            session=self.sessions.session_view(mac, now),
        )
        gen = self._generation()  # read after its own writes: on the worker, in order
        return Response(ok=True, device=device, uplink_up=up, pay_online=pay, generation=gen)

    def _typo(self, req: Login, mac: str) -> int | None:
        """Where a mistyped code is wrong, from the input and this device's own codes."""
        if req.method != "voucher" or not req.code:
            return None
        return typo_position(req.code, self.sessions.device_codes(mac))

    def _login(
        self,
        req: Login,
        now: float,
        account: Terms | None = None,
        balance: Asked | None = None,
        record: Callable[[], object] | None = None,  # in the login's transaction
    ) -> Response:
        mac = self.mac_for_ip(req.ip)
        if mac is None:
            return Response(ok=False, error="unknown_device", uplink_up=self.uplink_up())
        self.sessions.seen(mac, req.ip, now)
        before = self.sessions.grant_for(mac, now)  # what the kernel holds for it now
        extra: dict[str, Any] = {"account": account} if req.method == "account" else {}
        if balance is not None:
            extra["balance"] = balance
        if record is not None:
            extra["record"] = record
        try:
            view, error = self.sessions.login(
                mac, req.ip, req.method, req.code, now, enforce=self.kernel.authorize, **extra
            )
        except Exception:
            self._restore(mac, before)
            raise
        if error is not None or view is None:
            v = self.sessions.attempts(mac, now)
            return Response(
                ok=False,
                error=error or "internal",
                uplink_up=self.uplink_up(),
                retry_after=v.retry_after or None,
                attempts_left=warn(v) if error in WRONG_CODE and not v.retry_after else None,
                typo_position=self._typo(req, mac) if error == "unknown_code" else None,
            )
        self.on_event("device_authorised", mac=mac, plan=view.plan_id, method=req.method)
        device = DeviceView(mac=mac, ip=req.ip, session=view)
        gen = self._generation()  # the portal keeps this answer past its own change
        return Response(ok=True, device=device, uplink_up=self.uplink_up(), generation=gen)
