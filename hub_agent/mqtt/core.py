"""What every face of the MQTT wrapper shares: errors, broker URL, reconnect policy, and
the one place a paho client is built.

paho's return codes and socket errors are translated into ``MqttError`` here and in the
faces; callers never see a paho type they would have to import paho to handle. Passwords
are ``SecretStr`` and only unwrapped when handed to paho; ``str(BrokerUrl)`` has none.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

__all__ = [
    "OK",
    "Backoff",
    "BadBrokerUrl",
    "BrokerUrl",
    "ConnectFailed",
    "LinkStopped",
    "MqttError",
    "PahoClient",
    "PahoMessage",
    "Properties",
    "PublishFailed",
    "ReasonCode",
    "SubscribeFailed",
    "backoff_delay",
    "error_string",
    "new_client",
    "open_connection",
    "set_credentials",
    "topic_matches",
]

PahoClient = paho.Client
PahoMessage = paho.MQTTMessage
OK = MQTTErrorCode.MQTT_ERR_SUCCESS
NO_CONN = MQTTErrorCode.MQTT_ERR_NO_CONN
CONN_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST

# paho allows 20 QoS 1 messages in flight; a PUBACK stream then crawls. Mosquitto's own
# window in our configs is 1,000.
INFLIGHT_WINDOW = 1000

# One reconnect policy for every long-lived client (hub link, controller): exponential
# backoff with jitter from RECONNECT_MIN_S, capped at RECONNECT_MAX_S. The cap is what a
# hub waits at most once the broker is back (issue 14: the backlog must start within
# 10 s); the jitter ("equal jitter": [d/2, d]) still spreads 1,900 hubs over 2.5-5 s.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 5.0


class MqttError(Exception):
    """Base of every error the wrapper raises."""


class BadBrokerUrl(MqttError, ValueError):
    """Not ``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``."""


class ConnectFailed(MqttError):
    """The broker could not be reached, did not answer, or refused us."""


class SubscribeFailed(MqttError):
    """paho refused a SUBSCRIBE, or the broker refused or did not acknowledge it."""


class PublishFailed(MqttError):
    """paho refused a publish, or the broker answered with a failure reason code."""


class LinkStopped(MqttError):
    """The link was stopped while a publish was waiting for its acknowledgement."""


@dataclass(frozen=True)
class BrokerUrl:
    """Where a client connects and as whom. The one broker-URL parser of Relais."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None  # TLS: None means the system's CAs

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise BadBrokerUrl("expected mqtt://[user:pass@]host[:port] or mqtts://...")
        try:
            port = parts.port
        except ValueError as e:
            raise BadBrokerUrl(f"bad port: {e}") from None
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=SecretStr(unquote(parts.password)) if parts.password else None,
        )

    def with_credentials(self, username: str, password: str) -> BrokerUrl:
        """These credentials unless the URL named its own."""
        if self.username:
            return self
        return replace(self, username=username, password=SecretStr(password))

    def __str__(self) -> str:  # safe for logs: no password
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def backoff_delay(
    attempt: int,
    base: float = RECONNECT_MIN_S,
    cap: float = RECONNECT_MAX_S,
    rnd: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with "equal jitter": in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** min(attempt, 30)))
    return float(d / 2 + d / 2 * rnd())


class Backoff:
    """The reconnect policy as state: ``next()`` after a failed or lost connection,
    ``reset()`` once the broker accepted us (back off from the floor next time)."""

    def __init__(
        self,
        base: float = RECONNECT_MIN_S,
        cap: float = RECONNECT_MAX_S,
        rnd: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.attempt, self.rnd = base, cap, 0, rnd

    def next(self) -> float:
        delay = backoff_delay(self.attempt, self.base, self.cap, self.rnd)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def _nodelay(client: paho.Client, userdata: Any, sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def new_client(
    url: BrokerUrl,
    client_id: str,
    *,
    manual_ack: bool = False,
    nodelay: bool = False,
    inflight: int = INFLIGHT_WINDOW,
) -> paho.Client:
    """A paho MQTT 5 client for ``url``: credentials, TLS, in-flight window. ``nodelay``
    sets TCP_NODELAY (a PUBACK-paced stream otherwise waits on delayed ACKs)."""
    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if url.username is not None:
        set_credentials(c, url.username, url.password)
    if url.tls:
        cafile = str(url.ca_file) if url.ca_file is not None else None
        c.tls_set_context(ssl.create_default_context(cafile=cafile))
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)  # unbounded: the caller bounds what it hands over
    if nodelay:
        c.on_socket_open = _nodelay
    return c


def set_credentials(client: paho.Client, username: str, password: SecretStr | None) -> None:
    """The user the next CONNECT names (a hub falling back to its previous credential)."""
    secret = password.get_secret_value() if password is not None else None
    client.username_pw_set(username, secret)


# CONNACK reasons that mean "these credentials": another user may still be let in.
AUTH_REFUSED = frozenset({134, 135})  # bad user name or password, not authorized


def open_connection(
    client: paho.Client,
    url: BrokerUrl,
    *,
    keepalive: int = 30,
    clean_start: bool = True,
    session_expiry_s: int = 0,
) -> None:
    """Send CONNECT (the CONNACK comes through the client's loop); ConnectFailed when the
    broker cannot be reached."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    try:
        client.connect(
            url.host, url.port, keepalive=keepalive, clean_start=clean_start, properties=props
        )
    except (OSError, ssl.SSLError) as e:
        # An SSLError's str names the verification failure; an OSError's strerror is tidier.
        reason = str(e) if isinstance(e, ssl.SSLError) else e.strerror or str(e) or repr(e)
        raise ConnectFailed(f"cannot reach {url}: {reason}") from None


def error_string(rc: MQTTErrorCode | int) -> str:
    return str(paho.error_string(rc))


def topic_matches(subscription: str, topic: str) -> bool:
    return bool(paho.topic_matches_sub(subscription, topic))
