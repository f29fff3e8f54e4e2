"""What the hub's exchanges with the centre over MQTT share (mobile money in
``purchase_link.py``, roaming balances in ``roaming_link.py``).

Both ride the telemetry's ``MqttLink`` (QoS 1) as it is now: a broker switch replaces
``telemetry.link`` and keeps its handlers, so the link is read each time, never kept.
What they send is fire-and-forget (each resends from its own durable state); what they
take from the centre is a JSON object signed with the centre's key, checked for this hub.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from hub_agent.mqtt.link import Handler, Message, MqttLink

log = logging.getLogger(__name__)
V = TypeVar("V")


class CentreExchange:
    def __init__(self, telemetry: Any, hub_id: str) -> None:
        # hub_agent.telemetry.service.Telemetry; the lab swaps it for a downed one
        self.telemetry = telemetry
        self.hub_id = hub_id
        self.rejected = 0  # signed messages that failed verification

    @property
    def link(self) -> MqttLink:
        link: MqttLink = self.telemetry.link
        return link

    def online(self) -> bool:
        return self.link.connected.is_set()

    def subscribe(self, topic: str, handler: Handler) -> None:
        self.link.subscribe(topic, handler)

    def send(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish without waiting; a lost message is resent by its owner's next pass."""
        sent = self.link.publish(topic, payload)
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())

    def verified(
        self,
        msg: Message,
        key: str | None,
        verify: Callable[[Any, str, str], V],
        what: str,
    ) -> V | None:
        """``verify(body, key, hub_id)`` of the message, or None when it is not JSON, no
        central key is known yet, or it fails (counted in ``rejected``, logged)."""
        parsed, body = _loads(msg)
        if not parsed or key is None:
            return None
        try:
            return verify(body, key, self.hub_id)
        except ValueError as e:  # GrantError, AnswerError
            self.rejected += 1
            log.warning("%s refused: %s", what, e)
            return None


def json_object(msg: Message) -> dict[str, Any] | None:
    """The message's JSON object, or None (logged) when it is not one."""
    parsed, body = _loads(msg)
    return body if parsed and isinstance(body, dict) else None


def _loads(msg: Message) -> tuple[bool, Any]:
    try:
        return True, json.loads(msg.payload)
    except ValueError:
        log.warning("%s: not JSON", msg.topic)
        return False, None
