"""Mobile money over the hub's MQTT link (the telemetry's ``MqttLink``, QoS 1):

- publishes ``relais/hubs/{id}/payments/request`` for each purchase ``Purchases`` says is
  due (its table is the durable queue: a kill -9 or an outage re-sends from there);
- takes ``payments/status`` (progress) and ``payments/grant`` (verified with the central
  key, applied on the worker thread, then acknowledged on ``payments/ack``; a grant that
  fails verification is dropped, never acknowledged).

Handlers are registered before the link starts (``subscribe``) and follow a broker
switch (``MqttLink.moved_to`` keeps them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hub_agent.centre_exchange import CentreExchange, json_object
from hub_agent.mqtt.link import Message
from hub_agent.payments import verify_grant
from hub_agent.purchases import RESEND_S, Purchases
from hub_agent.telemetry import topics

log = logging.getLogger(__name__)
T = TypeVar("T")


def payments_topic(hub_id: str, leaf: str) -> str:
    return f"{topics.hub_root(hub_id)}/payments/{leaf}"


class PurchaseLink(CentreExchange):
    def __init__(
        self,
        purchases: Purchases,
        telemetry: Any,  # hub_agent.telemetry.service.Telemetry (its .link may be replaced)
        on_worker: Callable[[Callable[[], T]], Awaitable[T]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(telemetry, purchases.config().hub.id)
        self.purchases = purchases
        self.on_worker: Any = on_worker
        self.clock = clock
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        purchases.online = self.online

        def wake() -> None:  # from the worker thread
            loop.call_soon_threadsafe(self._wake.set)

        purchases.wake = wake
        self.subscribe(payments_topic(self.hub_id, "grant"), self._on_grant)
        self.subscribe(payments_topic(self.hub_id, "status"), self._on_status)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish due requests: at once for a new one, every RESEND_S otherwise."""
        while not stop.is_set():
            self._wake.clear()
            try:
                if self.online():
                    due = await self.on_worker(lambda: self.purchases.due_requests(self.clock()))
                    for payload in due:
                        self.send(payments_topic(self.hub_id, "request"), payload)
            except Exception:  # one bad pass must not stop the next
                log.exception("publishing purchase requests failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RESEND_S)

    async def _on_status(self, msg: Message) -> None:
        body = json_object(msg)
        if body is not None:
            await self.on_worker(lambda: self.purchases.on_status(body, self.clock()))

    async def _on_grant(self, msg: Message) -> None:
        key = self.purchases.config().trust.central_public_key
        grant = self.verified(msg, key, verify_grant, "payment grant")
        if grant is not None and await self.on_worker(
            lambda: self.purchases.apply_grant(grant, self.clock())
        ):
            self.send(payments_topic(self.hub_id, "ack"), {"ref": grant.ref})
