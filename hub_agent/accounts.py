"""The agent's RADIUS side (login method ``account``): authentication, accounting, CoA.

The round trips to the AAA server run on the event loop, never on the worker thread that
owns SQLite and the kernel. An account login takes one trip through the worker, as a
voucher's: the gate (blocked? locked out after wrong passwords?) reads the committed state
on a read-only connection of its own, in a thread, so the Access-Request never queues
behind a periodic pass; then RADIUS on the loop; then the login, its accounting Start and
its kernel change in one transaction on the worker (one commit). The accounting journal
is kept in step with the sessions table by ``sync`` (sessions/accounts.py), run on the
worker after every accounting pass and inside an account login's transaction;
``AccountingSender`` delivers it. Disconnect/CoA-Request first fold the kernel's latest
counts into the session (so the Stop carries what the kernel saw), then end it or re-grant
it with the new terms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import sqlite_utils

from hub_agent.config import HubConfig
from hub_agent.enforce.model import Grant
from hub_agent.radius import (
    Accepted,
    AccountingSender,
    Change,
    CoaListener,
    Journal,
    Nas,
    RadiusClient,
    Target,
)
from hub_agent.sessions import accounts, attempts
from hub_agent.sessions.accounts import ACCOUNT, Terms
from hub_agent.sessions.service import SessionService
from hub_agent.store import transaction

log = logging.getLogger(__name__)

T = TypeVar("T")
OnWorker = Callable[[Callable[[], Any]], Awaitable[Any]]


class Kernel(Protocol):
    def authorize(self, grant: Grant) -> None: ...
    def deauthorize(self, mac: str) -> None: ...


class Accounts:
    """Built on the worker (the journal's migrations); ``start``/``stop`` on the loop."""

    def __init__(
        self,
        config: HubConfig,
        db: sqlite_utils.Database,
        sessions: SessionService,
        kernel: Callable[[], Kernel],  # the current enforcer (a new config makes another)
        on_worker: OnWorker,
        fold: Callable[[], object],  # one accounting pass: the kernel's counts into the DB
        on_event: Callable[..., None] = lambda *a, **k: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.client = RadiusClient(config)
        self.journal = Journal(db, Nas.from_config(config), clock=clock)
        self.sessions = sessions
        self.kernel = kernel
        self.on_worker = on_worker
        self.fold = fold
        self.on_event = on_event
        self.clock = clock
        self.sender = AccountingSender(self.journal, self.client.account, run=on_worker)
        self.listener = CoaListener(config, self.on_disconnect, self.on_change, clock=clock)
        self._task: asyncio.Task[None] | None = None
        self._reader: sqlite3.Connection | None = None  # the gate's, opened on first use
        self._reading = threading.Lock()

    # --- login (loop, then worker) ----------------------------------------------------------
    def offered(self) -> bool:
        return ACCOUNT in self.sessions.config.portal.login_methods

    def standing(self, mac: str, now: float) -> tuple[bool, attempts.Verdict]:
        """Any thread: (blocked, wrong-password verdict) of the device, as last committed.

        A WAL reader never waits for the worker's writes; the login transaction checks both
        again, so a change committed in between is still honoured."""
        portal = self.sessions.config.portal
        with self._reading:
            if self._reader is None:
                path = self.journal.db.conn.execute("PRAGMA database_list").fetchone()[2]
                self._reader = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, check_same_thread=False
                )
            conn = self._reader
            row = conn.execute("SELECT blocked FROM devices WHERE mac = ?", (mac,)).fetchone()
            v = attempts.standing(conn, mac, now, portal.login_attempts, portal.lockout_seconds)
        return bool(row and row[0]), v

    async def authenticate(self, username: str, password: str, mac: str, ip: str) -> Terms | None:
        """The session's terms, or None for a reject; raises RadiusUnavailable."""
        got = await self.client.authenticate(username, password, mac, ip)
        if isinstance(got, Accepted):
            return accounts.terms_from(got)
        log.info("radius reject for a login from %s", mac)  # never the name nor the password
        return None

    def sync(self) -> None:
        """Worker: queue the accounting records the sessions table calls for."""
        with transaction(self.journal.db):
            accounts.sync(self.journal, self.sessions.conn, self.clock())

    async def set_config(self, config: HubConfig, rebind: bool) -> None:
        """A new config (loop): new servers, secrets and defaults for the next logins and
        records; the CoA listener takes the new servers, and with ``rebind`` moves to the
        new address or port (raises OSError when it cannot bind: the apply rolls back)."""
        if config.radius is None:
            raise ValueError("the config has no radius section")
        self.config = config
        self.client = RadiusClient(config)
        self.sender.send = self.client.account
        self.journal.nas = Nas.from_config(config)
        if not rebind:
            self.listener.set_config(config)
            return
        self.listener.close()
        self.listener = CoaListener(config, self.on_disconnect, self.on_change, clock=self.clock)
        await self._listen()

    # --- Dynamic Authorization (loop, then worker) ------------------------------------------
    async def on_disconnect(self, target: Target) -> bool:
        return bool(await self.on_worker(lambda: self._disconnect(target)))

    async def on_change(self, target: Target, change: Change) -> bool:
        return bool(await self.on_worker(lambda: self._change(target, change)))

    def _disconnect(self, target: Target) -> bool:
        self.fold()  # the Stop carries the bytes the kernel counted until now
        found = accounts.live_matching(self.sessions.conn, target)
        for mac, _ in found:
            self.sessions.end(mac, "disconnect", self.clock())
            self.kernel().deauthorize(mac)
            self.on_event("device_deauthorised", mac=mac, reason="disconnect")
        self.sync()
        return bool(found)

    def _change(self, target: Target, change: Change) -> bool:
        self.fold()
        found = accounts.live_matching(self.sessions.conn, target)
        for mac, terms in found:
            # the new terms and the kernel change commit together, as a login does
            with transaction(self.sessions.db):
                accounts.set_terms(self.sessions.conn, mac, terms.changed(change))
                grant = self.sessions.grant_for(mac, self.clock())
                if grant is not None:
                    self.kernel().authorize(grant)
            up, down = accounts.counts(self.sessions.conn, [mac]).get(mac, (0, 0))
            self.journal.interim(terms.session_id, up, down, self.clock())
        return bool(found)

    # --- lifecycle (loop) -------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self.sender.run())
        try:
            await self._listen()
        except OSError as e:  # accounts still work; only the AAA's pushes do not
            log.error("radius CoA listener not started: %s", e)

    async def _listen(self) -> None:
        if self.listener.port is not None:
            port = await self.listener.start()
            log.info("radius CoA/Disconnect on %s:%d", self.listener.address, port)

    async def stop(self) -> None:
        self.listener.close()
        with self._reading:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
