"""The portal's only door to the hub: the agent's UNIX socket. Fails closed.

Every question about devices, sessions, vouchers and health goes to the agent; when it
does not answer, the portal treats the device as not authorised and says the service is
temporarily unavailable. Errors are translated here, once, into plain outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hub_agent.api.changes import ALL
from hub_agent.api.client import AgentUnavailable, call
from hub_agent.api.protocol import DeviceView, Request, Response, SessionView, Watch, Whoami
from hub_agent.sessions.states import LIVE

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"
# A captive phone asks again and again (OS probes, the splash, the browser's retries): the
# portal keeps each device's last answer and the agent tells it which devices changed
# (``Watch``, a long poll: hub_agent/api/changes.py). While that feed is live, an answer
# is reused this long (what changes without a session change, usage and the uplink
# banner, shows within it; probes and the splash only need "through or not").
FRESH_S = 2.0  # pages that show usage (status, RFC 8908)
FRESH_CAPTIVE_S = 10.0  # probes and the splash
STALE_S = 30.0
WATCH_WAIT_S = 20.0


def active_session(device: DeviceView | None) -> SessionView | None:
    """The device's session when it currently lets the device through, else None."""
    if device is None or device.blocked or device.session is None:
        return None
    return device.session if device.session.state in LIVE else None


@dataclass(frozen=True)
class DeviceState:
    """What the portal knows about the device asking, from one agent round trip."""

    available: bool  # False: the agent did not answer (fail closed)
    device: DeviceView | None
    uplink_up: bool | None
    pay_online: bool | None = None  # mobile money is offered now (None: not asked)
    stale: bool = False  # the agent is silent now: this is its last answer, kept a while

    @property
    def session(self) -> SessionView | None:
        return active_session(self.device) if self.available else None

    @property
    def authorised(self) -> bool:
        return self.session is not None

    @property
    def offline(self) -> bool:
        return self.uplink_up is False


@dataclass
class _Entry:
    at: float  # when it was answered (monotonic)
    state: DeviceState
    generation: int  # the agent's change feed, as this answer reflects it
    current: bool = True  # False once the feed said the device changed since


@dataclass
class DeviceCache:
    """Device states by IP, newest answers kept, bounded (a LAN has few devices, but a
    flood of spoofed addresses must not grow it). An answer the feed made out of date is
    no longer reused, but stays as the fallback while the agent is silent."""

    clock: Callable[[], float] = time.monotonic
    max_entries: int = 4096
    _items: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)

    def get(self, ip: str, max_age_s: float, current: bool = True) -> DeviceState | None:
        e = self._items.get(ip)
        if e is None or self.clock() - e.at > max_age_s or (current and not e.current):
            return None
        return e.state

    def put(self, ip: str, state: DeviceState, generation: int) -> None:
        old = self._items.get(ip)
        if old is not None and old.generation > generation:  # an older answer arrived late
            return
        self._items[ip] = _Entry(self.clock(), state, generation)
        self._items.move_to_end(ip)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def forget(self, ip: str) -> None:
        self._items.pop(ip, None)

    def changed(self, macs: dict[str, int]) -> None:
        """The feed's news: these devices changed at these generations (``ALL``: every
        device); answers that do not reflect it are out of date."""
        every = macs.get(ALL)
        for e in self._items.values():
            g = macs.get(_mac(e.state), every) if every is None else every
            if g is not None and e.generation < g:
                e.current = False


def _mac(state: DeviceState) -> str:
    return state.device.mac if state.device is not None else ""


class Agent:
    def __init__(self, socket_path: Path, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.devices = DeviceCache()
        self.synced = False  # the change feed is followed: cached answers can be trusted
        self._inflight: dict[str, asyncio.Future[DeviceState]] = {}

    async def ask(self, request: Request, timeout_s: float | None = None) -> Response:
        """The agent's answer, or ``ok=False, error="unavailable"`` when it is silent."""
        try:
            timeout = self.timeout_s if timeout_s is None else timeout_s
            return await call(self.socket_path, request, timeout=timeout)
        except AgentUnavailable as e:
            log.warning("agent unavailable for op=%s: %s", request.op, e)
            return Response(ok=False, error=UNAVAILABLE, message=str(e))
        except ValueError as e:  # an answer that is not a Response: treat as silence
            log.error("agent answered garbage for op=%s: %s", request.op, e)
            return Response(ok=False, error=UNAVAILABLE, message="bad agent answer")

    async def whoami(self, ip: str, fresh_s: float = FRESH_S, behind_s: float = 0.0) -> DeviceState:
        """The device's state: a cached answer still true (the change feed is live and
        it is younger than ``fresh_s``), else the agent's, else (the agent busy or away)
        the last answer while it is recent, else unavailable (fail closed). With
        ``behind_s``, a cached answer the feed still calls true and younger than that is
        given at once while the agent is asked behind it."""
        known = self.known(ip, fresh_s, behind_s)
        return known if known is not None else await asyncio.shield(self._asking(ip))

    def known(self, ip: str, fresh_s: float = FRESH_S, behind_s: float = 0.0) -> DeviceState | None:
        """``whoami``'s answer when it needs no wait (a cached answer; an aged one also
        sends the question behind it), else None."""
        if not self.synced:
            return None
        cached = self.devices.get(ip, fresh_s)
        if cached is not None:
            return cached
        aged = self.devices.get(ip, behind_s) if behind_s > fresh_s else None
        if aged is not None:
            self._asking(ip)
        return aged

    async def captive(self, ip: str) -> DeviceState:
        """The state the OS probes and the splash need ("through or not"): every request
        of a device would otherwise wait on the agent's round trip each FRESH_CAPTIVE_S
        (all 64 of a crowd's connections from one address: the splash's p99 of 0.5 s in
        bench/bench_portal.py); a change the feed reports is still waited for."""
        known = self.captive_known(ip)
        return known if known is not None else await asyncio.shield(self._asking(ip))

    def captive_known(self, ip: str) -> DeviceState | None:
        """``captive``'s answer when it needs no wait, else None."""
        return self.known(ip, FRESH_CAPTIVE_S, behind_s=STALE_S)

    def _asking(self, ip: str) -> asyncio.Future[DeviceState]:
        """The agent's answer for ``ip``: one question per device at a time, however many
        requests."""
        pending = self._inflight.get(ip)
        if pending is None:
            pending = asyncio.ensure_future(self._ask_whoami(ip))
            self._inflight[ip] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(ip, None))
        return pending

    async def _ask_whoami(self, ip: str) -> DeviceState:
        r = await self.ask(Whoami(ip=ip))
        if r.error == UNAVAILABLE:
            last = self.devices.get(ip, STALE_S, current=False)
            return replace(last, stale=True) if last else DeviceState(False, None, None)
        # the offer rides along; an agent that says nothing has no mobile money (else each
        # splash would ask it again: routes.pay.pay_offer)
        state = DeviceState(True, r.device if r.ok else None, r.uplink_up, bool(r.pay_online))
        if r.generation is not None:
            self.devices.put(ip, state, r.generation)
        return state

    async def watch(self, retry_s: float = 1.0) -> None:
        """Follow the agent's change feed for as long as the portal runs (a task)."""
        gen = -1
        while True:
            r = await self.ask(Watch(since=gen, wait_s=WATCH_WAIT_S), WATCH_WAIT_S + 10)
            if not r.ok or r.generation is None:  # away, restarting, or an old agent
                self.synced, gen = False, -1
                await asyncio.sleep(retry_s)
                continue
            if gen < 0 or r.generation < gen:  # first contact, or a restarted agent
                self.devices.changed({ALL: r.generation + 1})
            elif r.changed:
                self.devices.changed(r.changed)
            gen, self.synced = r.generation, True

    def remember(self, ip: str, state: DeviceState, generation: int | None) -> None:
        """What a login just answered is the device's state now (as of ``generation``)."""
        if state.available and generation is not None:
            self.devices.put(ip, state, generation)
