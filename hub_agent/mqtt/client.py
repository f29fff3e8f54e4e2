"""The blocking face of the MQTT wrapper, for one-shot commands (``hubctl push|remove``,
the fleet simulator, benches): connect (MQTT 5), subscribe, publish, wait.

paho runs its network loop in its own thread; CONNACK, SUBACK and PUBACK become blocking
waits with timeouts, and failures become ``MqttError``s that name the broker, never the
password. No reconnection: a command that loses the broker fails and is run again.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hub_agent.mqtt.core import (
    OK,
    BrokerUrl,
    ConnectFailed,
    PublishFailed,
    SubscribeFailed,
    error_string,
    new_client,
    open_connection,
)

OnMessage = Callable[[str, bytes, bool], None]


class Client:
    """A connected MQTT 5 client. ``on_message(topic, payload, retained)`` runs in paho's
    network thread: keep it short."""

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str | None = None,
        on_message: OnMessage | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        nodelay: bool = False,  # TCP_NODELAY: for request/answer traffic (core.new_client)
    ) -> None:
        self.url = url
        self._client = new_client(
            url, client_id or f"hubctl-{secrets.token_hex(4)}", nodelay=nodelay
        )
        self._connected = threading.Event()
        self._rc: Any = None
        self._subacks: dict[int, threading.Event] = {}
        self._granted: dict[int, list[Any]] = {}
        self._lock = threading.Lock()
        self._clean_start = clean_start
        self._expiry = session_expiry_s
        self._on_message = on_message
        self._client.on_connect = self._handle_connect
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_message = self._handle_message
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish
        self._sent = 0
        self._acked = 0
        self._idle = threading.Condition()

    def set_will(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self._client.will_set(topic, payload, qos=1, retain=retain)

    def _handle_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._rc = rc
        self._connected.set()

    def _handle_disconnect(self, *args: Any) -> None:
        self._connected.clear()

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self._lock:
            ev = self._subacks.setdefault(mid, threading.Event())
            self._granted[mid] = list(rcs)
        ev.set()

    def _handle_publish(self, *args: Any) -> None:
        with self._idle:
            self._acked += 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every message published so far is acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._acked < self._sent:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _handle_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if self._on_message is not None:
            self._on_message(msg.topic, msg.payload, bool(msg.retain))

    def connect(self, timeout: float = 10) -> None:
        open_connection(
            self._client,
            self.url,
            clean_start=self._clean_start,
            session_expiry_s=self._expiry,
        )
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise ConnectFailed(f"no answer from {self.url} within {timeout:.0f}s")
        if self._rc is not None and self._rc.is_failure:
            self.close()
            raise ConnectFailed(f"{self.url} refused the connection: {self._rc}")

    def subscribe(self, filters: Sequence[str], qos: int = 1, timeout: float = 10) -> None:
        result, mid = self._client.subscribe([(f, qos) for f in filters])
        if result != OK or mid is None:
            raise SubscribeFailed(f"subscribe failed ({error_string(result)})")
        with self._lock:
            ev = self._subacks.setdefault(mid, threading.Event())
        if not ev.wait(timeout):
            raise SubscribeFailed("no SUBACK from the broker")
        denied = [f for f, rc in zip(filters, self._granted[mid], strict=False) if rc.is_failure]
        if denied:
            raise SubscribeFailed(f"broker refused subscriptions: {denied}")

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 10
    ) -> None:
        with self._idle:
            self._sent += 1
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != OK:
            raise PublishFailed(f"publish to {topic} failed ({error_string(info.rc)})")
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise PublishFailed(f"publish to {topic}: no PUBACK within {timeout:.0f}s")

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        with self._idle:
            self._sent += 1
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
