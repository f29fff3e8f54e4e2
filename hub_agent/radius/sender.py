"""The accounting sender: drains ``radius_acct`` to the AAA servers, forever.

Each pass asks the pure planner what is due, sends it (several sessions at once, each
session's rows in order), deletes what was acknowledged and backs off what was not. It
sleeps until the earliest backoff ends or a new record is written (``Journal.on_record``
wakes it, from any thread). Database calls go through ``run`` so that, in the agent, they
happen on the thread that owns SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hub_agent.radius.accounting import Journal, Pending, next_wake, plan_sends, with_delay
from hub_agent.radius.client import RadiusUnavailable
from hub_agent.radius.packets import AttrList

log = logging.getLogger(__name__)

T = TypeVar("T")
Runner = Callable[[Callable[[], T]], Awaitable[T]]
# Sends one request built by ``attrs_at(now)``; returns when acknowledged, raises
# RadiusUnavailable otherwise (RadiusClient.account).
Send = Callable[[Callable[[float], AttrList]], Awaitable[None]]

IDLE_S = 60.0  # re-read the table this often even when nothing woke us


async def inline(fn: Callable[[], T]) -> T:
    return fn()


class AccountingSender:
    def __init__(
        self,
        journal: Journal,
        send: Send,
        run: Runner[object] = inline,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.send = send
        self.run_db = run
        self.concurrency = concurrency
        self.clock = clock
        self.sent = 0  # acknowledged rows, for status and tests
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Something was recorded: look again now. Safe from any thread."""
        loop, event = self._loop, self._event
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(event.set)

    async def _db(self, fn: Callable[[], T]) -> T:
        return await self.run_db(fn)  # type: ignore[return-value]

    async def _one(self, row: Pending) -> bool:
        def attrs_at(now: float) -> AttrList:
            return with_delay(row.attrs, row.ts, now)

        try:
            await self.send(attrs_at)
        except RadiusUnavailable as e:
            log.warning("radius accounting %s %s not delivered: %s", row.status, row.id, e)
            await self._db(lambda: self.journal.failed(row.id, self.clock()))
            return False
        await self._db(lambda: self.journal.acked(row.id))
        self.sent += 1
        if row.tries:  # the servers are back: what waits out a backoff goes now
            await self._db(lambda: self.journal.retry_now(self.clock()))
        return True

    async def pass_once(self) -> float | None:
        """Send every due row (session by session, in order); seconds until the next due."""
        while True:
            rows = await self._db(self.journal.pending)
            due = plan_sends(rows, self.clock(), frozenset(), self.concurrency)
            if not due:
                return next_wake(rows, self.clock())
            results = await asyncio.gather(*(self._one(r) for r in due))
            if not any(results):
                rows = await self._db(self.journal.pending)
                return next_wake(rows, self.clock())

    async def run(self) -> None:
        """Drain until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.journal.on_record = self.wake
        try:
            while True:
                self._event.clear()
                try:
                    wait = await self.pass_once()
                except Exception:  # a bug or a database error must not end accounting
                    log.exception("radius accounting pass failed")
                    wait = 5.0
                timeout = IDLE_S if wait is None else min(wait, IDLE_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), timeout)
        finally:
            self.journal.on_record = None
            self._loop = None
