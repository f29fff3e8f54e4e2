"""The one wrapper of paho-mqtt 2.x for hubctl: connect (MQTT 5), subscribe, publish, wait.

paho runs its network loop in its own thread; this wrapper turns CONNACK, SUBACK and
PUBACK into blocking waits with timeouts and errors that name the broker, never the
password.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class MqttError(RuntimeError):
    pass


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise MqttError("broker URL: expected mqtt://[user:pass@]host[:port] or mqtts://...")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def with_credentials(self, username: str, password: str) -> BrokerUrl:
        if self.username:
            return self
        return BrokerUrl(self.host, self.port, self.tls, username, password)

    def __str__(self) -> str:  # safe for logs: no password
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


OnMessage = Callable[[str, bytes, bool], None]


class Client:
    """A connected MQTT 5 client. ``on_message(topic, payload, retained)`` runs in paho's
    network thread: keep it short (the controller only appends to a batch there)."""

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str | None = None,
        on_message: OnMessage | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
    ) -> None:
        self.url = url
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"hubctl-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        if url.username:
            self._client.username_pw_set(url.username, url.password)
        if url.tls:
            self._client.tls_set()
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
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self._expiry:
            props.SessionExpiryInterval = self._expiry
        try:
            self._client.connect(
                self.url.host,
                self.url.port,
                keepalive=30,
                clean_start=self._clean_start,
                properties=props,
            )
        except OSError as e:
            raise MqttError(f"cannot reach {self.url}: {e.strerror or e}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise MqttError(f"no answer from {self.url} within {timeout:.0f}s")
        if self._rc is not None and self._rc.is_failure:
            self.close()
            raise MqttError(f"{self.url} refused the connection: {self._rc}")

    def subscribe(self, filters: Sequence[str], qos: int = 1, timeout: float = 10) -> None:
        result, mid = self._client.subscribe([(f, qos) for f in filters])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe failed ({mqtt.error_string(result)})")
        with self._lock:
            ev = self._subacks.setdefault(mid, threading.Event())
        if not ev.wait(timeout):
            raise MqttError("no SUBACK from the broker")
        denied = [f for f, rc in zip(filters, self._granted[mid], strict=False) if rc.is_failure]
        if denied:
            raise MqttError(f"broker refused subscriptions: {denied}")

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 10
    ) -> None:
        with self._idle:
            self._sent += 1
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic} failed ({mqtt.error_string(info.rc)})")
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise MqttError(f"publish to {topic}: no PUBACK within {timeout:.0f}s")

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
