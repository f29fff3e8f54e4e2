"""Roaming balances over the hub's MQTT link (the telemetry's ``MqttLink``, QoS 1).

- ``before_login(code)``: on the event loop, before the login's transaction. A code that
  is not central (or fails its offline check) gives None: the login goes on as before. A
  central one is asked of the centre (``balances/query``) when the link is up, waiting at
  most ``roaming.query_timeout_ms`` for the signed ``balances/answer``; no link, no answer
  in time or a bad signature mean "no answer" (the offline allowance, hub_agent/roaming.py).
- ``run(stop)``: every ``roaming.report_every_s``, the usage of each central code used here
  goes to the outbox as a ``code_usage`` event (cumulative bytes; the centre folds them by
  (hub, code) keeping the highest event ``seq``, so re-sends are harmless); while the link
  is up, codes granted offline that still have a live session are asked again and their
  sessions re-granted with what the centre says is left (reconciliation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hub_agent.centre_exchange import CentreExchange
from hub_agent.config import HubConfig
from hub_agent.mqtt.link import Message
from hub_agent.roaming import Answer, Asked, balance_topic, verify_answer
from hub_agent.sessions import loop as sessions_loop
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.quota import plan_limits
from hub_agent.sessions.service import SessionService
from hub_agent.sessions.vouchers import normalise_code, verify_central_code

log = logging.getLogger(__name__)
T = TypeVar("T")
RECONCILE_EVERY_S = 5.0


class RoamingLink(CentreExchange):
    def __init__(
        self,
        config: Callable[[], HubConfig],
        telemetry: Any,  # hub_agent.telemetry.service.Telemetry (its .link may be replaced)
        sessions: SessionService,
        kernel: Callable[[], sessions_loop.Kernel],
        on_worker: Callable[[Callable[[], T]], Awaitable[T]],
        clock: Callable[[], float] = time.time,
        fold: Callable[[], object] | None = None,  # worker: one accounting pass (the agent's)
    ) -> None:
        super().__init__(telemetry, config().hub.id)
        self.config = config
        self.sessions = sessions
        self.kernel = kernel
        self.on_worker: Any = on_worker
        self.clock = clock
        self.fold = fold or (lambda: sessions_loop.tick(self.sessions, self.kernel(), now=clock()))
        self._waiting: dict[str, asyncio.Future[Answer]] = {}
        self.timeouts = 0
        self.subscribe(balance_topic(self.hub_id, "answer"), self._on_answer)

    # --- at login -------------------------------------------------------------------------
    async def before_login(self, text: str) -> Asked | None:
        cfg = self.config()
        code = normalise_code(text)
        secret = cfg.trust.voucher_secret
        if code is None or secret is None:
            return None
        found = verify_central_code(
            secret.get_secret_value().encode(), code, [p.id for p in cfg.plans]
        )
        if found is None:
            return None
        quota = plan_limits(cfg.plan(found.plan_id)).quota_bytes
        answer = await self.ask(code, found.plan_id, cfg.roaming.query_timeout_ms / 1000)
        return Asked(code, quota, answer, cfg.roaming.offline_share_pct)

    async def ask(self, code: str, plan_id: str, timeout_s: float) -> Answer | None:
        """The centre's verified answer, or None (link down, timeout)."""
        if not self.online() or self.config().trust.central_public_key is None:
            return None
        request_id = secrets.token_hex(8)
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        query = {"request_id": request_id, "code": code, "plan_id": plan_id, "ts": self.clock()}
        self.send(balance_topic(self.hub_id, "query"), query)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            self.timeouts += 1
            return None
        finally:
            self._waiting.pop(request_id, None)

    async def _on_answer(self, msg: Message) -> None:
        key = self.config().trust.central_public_key
        answer = self.verified(msg, key, verify_answer, "balance answer")
        fut = self._waiting.get(answer.request_id) if answer is not None else None
        if answer is not None and fut is not None and not fut.done():
            fut.set_result(answer)

    # --- in the background ------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        next_report = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + self.config().roaming.report_every_s
                    await self.report_usage()
                if self.online():
                    await self.reconcile()
            except Exception:  # one bad pass must not stop the next
                log.exception("roaming pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(RECONCILE_EVERY_S, self._report_s()))

    def _report_s(self) -> float:
        return self.config().roaming.report_every_s

    async def report_usage(self) -> int:
        """Usage per central code to the outbox, then marked reported (a crash in between
        re-sends the same cumulative figure: harmless at the centre)."""
        conn = self.sessions.conn
        pending = await self.on_worker(lambda: sroaming.pending_usage(conn))
        for u in pending:
            fields = u.as_event()
            self.telemetry.events.emit(str(fields.pop("type")), **fields)
        if pending:
            now = self.clock()
            await self.on_worker(lambda: _mark(self.sessions, pending, now))
        return len(pending)

    async def reconcile(self) -> int:
        """Codes granted offline with a live session here: ask again, re-grant."""
        conn = self.sessions.conn
        codes = await self.on_worker(lambda: sroaming.offline_codes(conn))
        cfg = self.config()
        done = 0
        for code, plan_id in codes:
            try:
                quota = plan_limits(cfg.plan(plan_id)).quota_bytes
            except KeyError:
                continue
            answer = await self.ask(code, plan_id, max(1.0, cfg.roaming.query_timeout_ms / 1000))
            if answer is None:
                continue
            asked = Asked(code, quota, answer, cfg.roaming.offline_share_pct)

            def apply(asked: Asked = asked) -> None:
                # the kernel's latest counts first: the new grant is what is left after
                # them (a grant from stale counts would give the bytes since back)
                self.fold()
                actions = self.sessions.apply_roaming(asked, self.clock())
                sessions_loop.apply(actions, self.kernel())

            await self.on_worker(apply)
            done += 1
        return done


def _mark(sessions: SessionService, usage: list[sroaming.Usage], now: float) -> None:
    from hub_agent.store import transaction

    with transaction(sessions.db):
        sroaming.mark_reported(sessions.conn, usage, now)
