"""The hub's face of the MQTT wrapper: one link, session, will, acks as futures.

paho runs its network loop in one thread we own (``relais-mqtt``); everything it reports
(connect, disconnect, PUBACK, incoming message) is handed to the asyncio loop with
``call_soon_threadsafe``, so the rest of the agent only sees futures and coroutines.

- MQTT v5, ``clean_start=False`` and a long session expiry: the broker keeps the hub's
  subscription and queues QoS 1 messages (a config pushed while the hub was offline).
  paho keeps unacknowledged publishes in memory and re-sends them after a reconnect.
- Reconnection is ours (not paho's fixed doubling), with the wrapper's one policy
  (``core.Backoff``: jittered, capped at a few seconds).
- Every connect attempt takes a new, persisted ``session`` number. The Last Will (retained
  ``state`` ``{"online": false, ..., "session": N}``) and the retained online ``state``
  sent after CONNACK carry it, so the centre can tell a late will of an old session from
  the state of the current one. The will's ``ts`` is the time of its connect attempt.
- Throughput: a 1,000-message in-flight window and TCP_NODELAY (``core.new_client``).
- Credential rotation: with a ``fallback`` user (the one the hub had before ``hubctl
  rotate``), a CONNACK refusing the new user's credentials makes the link connect as the
  previous one; ``status.credential`` ("new"/"previous") and the retained ``state``
  (``user``, ``credential``) say which is in use, so the centre knows when to retire the
  old user. While on the previous user, the link tries the new one again with a short
  side connection on a backoff (``fallback.CredentialChoice``: minutes, jittered, capped)
  and moves to it once the broker accepts it: a clean DISCONNECT (no will) and a CONNECT
  as the new user on the same persistent session; paho re-sends what was not acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from hub_agent import __version__
from hub_agent.config import HubConfig
from hub_agent.mqtt.client import Client
from hub_agent.mqtt.core import (
    AUTH_REFUSED,
    INFLIGHT_WINDOW,
    NO_CONN,
    OK,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    Backoff,
    BrokerUrl,
    ConnectFailed,
    LinkStopped,
    MqttError,
    PahoClient,
    PahoMessage,
    Properties,
    PublishFailed,
    ReasonCode,
    error_string,
    new_client,
    open_connection,
    set_credentials,
    topic_matches,
)
from hub_agent.mqtt.fallback import (
    RETRY_NEW_MAX_S,
    RETRY_NEW_MIN_S,
    CredentialChoice,
    retry_new_min_s,
)
from hub_agent.telemetry import topics

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 30 * 86_400  # the broker keeps our session through month-long outages


@dataclass(frozen=True)
class LinkSettings:
    hub_id: str
    host: str
    port: int
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = 60
    min_backoff_s: float = RECONNECT_MIN_S
    max_backoff_s: float = RECONNECT_MAX_S
    inflight: int = INFLIGHT_WINDOW
    fallback_username: str | None = None
    fallback_password: SecretStr | None = None
    retry_new_s: float = RETRY_NEW_MIN_S  # first retry of a refused new user

    def user(self, previous: bool) -> tuple[str | None, SecretStr | None]:
        if previous and self.fallback_username is not None:
            return self.fallback_username, self.fallback_password
        return self.username, self.password

    @property
    def client_id(self) -> str:
        # Stable per hub: the persistent session is keyed on it.
        return f"relais-hub-{self.hub_id}"

    @property
    def broker(self) -> BrokerUrl:
        return BrokerUrl(self.host, self.port, self.tls, self.username, self.password, self.ca_file)

    @classmethod
    def from_config(cls, cfg: HubConfig, **overrides: Any) -> LinkSettings:
        m = cfg.mqtt
        # A sample every interval already proves the link alive; a PINGREQ on top of it
        # costs ~106 bytes on the wire each time. Keep the keepalive above the interval.
        keepalive = max(m.keepalive_s, int(m.telemetry_interval_s * 1.5) + 1)
        values: dict[str, Any] = {
            "hub_id": cfg.hub.id,
            "host": m.host,
            "port": m.port,
            "tls": m.tls,
            "ca_file": m.ca_file,
            "username": m.username,
            "password": m.password,
            "keepalive_s": keepalive,
            "retry_new_s": retry_new_min_s(),
            "fallback_username": m.fallback.username if m.fallback else None,
            "fallback_password": m.fallback.password if m.fallback else None,
        }
        values.update(overrides)
        return cls(**values)


def state_payload(
    online: bool,
    session: int,
    config_version: int | None,
    ts: float | None = None,
    user: tuple[str | None, str] | None = None,
) -> dict[str, Any]:
    """``user``: the broker user this session connects as and whether it is the "new" or
    the "previous" credential (the centre retires the previous user once it sees "new")."""
    out: dict[str, Any] = {
        "online": online,
        "ts": round(time.time() if ts is None else ts, 3),
        "agent_version": __version__,
        "config_version": config_version,
        "session": session,
    }
    if user is not None and user[0] is not None:
        out["user"], out["credential"] = user
    return out


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


Handler = Callable[[Message], Awaitable[None]]


@dataclass
class LinkStatus:
    connected: bool = False
    session: int = 0
    connected_since: float | None = None
    last_error: str | None = None
    connects: int = 0
    failures: int = 0  # connect attempts that ended without the broker accepting us
    user: str | None = None  # the broker user of the current (or next) attempt
    credential: str = "new"  # "previous": the new user was refused, the fallback is in use
    extra: dict[str, Any] = field(default_factory=dict)


class MqttLink:
    """One broker connection for the agent. ``start()``/``stop()`` from the event loop."""

    def __init__(
        self,
        settings: LinkSettings,
        next_session: Callable[[], int],
        config_version: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self._next_session = next_session
        self._config_version = config_version
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._accepted = False  # a CONNACK success since the last connect attempt
        self._auth_refused = False  # the last CONNACK refused these credentials
        cap = max(settings.retry_new_s, RETRY_NEW_MAX_S)
        self._creds = CredentialChoice(
            settings.fallback_username is not None, Backoff(settings.retry_new_s, cap)
        )
        self._probe: threading.Thread | None = None
        self._probe_accepted: bool | None = None  # set by the probe thread
        self.connected = asyncio.Event()
        self.status = LinkStatus()
        self._client = self._make_client()

    # -- set-up --------------------------------------------------------------------------

    def _make_client(self) -> PahoClient:
        s = self.settings
        c = new_client(s.broker, s.client_id, nodelay=True, inflight=s.inflight)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        return c

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Register before ``start()``; (re)subscribed with QoS 1 on every connect."""
        self._handlers[topic] = handler

    def moved_to(self, settings: LinkSettings) -> MqttLink:
        """A new, unstarted link to ``settings`` with this one's subscriptions, session
        counter and config version (a broker or credentials change)."""
        link = MqttLink(settings, self._next_session, self._config_version)
        link._handlers = dict(self._handlers)
        return link

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relais-mqtt", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 2.0) -> None:
        """Clean stop: publish the offline state ourselves (a clean DISCONNECT drops the
        will), then disconnect and join the network thread."""
        if self._thread is None:
            return
        if self.connected.is_set():
            payload = self._state(False)
            with contextlib.suppress(MqttError, TimeoutError):
                await asyncio.wait_for(
                    self.publish(topics.state(self.settings.hub_id), payload, retain=True),
                    timeout,
                )
        self._stop.set()
        self._client.disconnect()
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join, timeout + 3)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkStopped("link stopped before the broker acknowledged"))
        self._pending.clear()
        self.connected.clear()

    def _run(self) -> None:
        """Network thread: connect, run paho's loop until the link drops, back off, repeat."""
        s = self.settings
        backoff = Backoff(s.min_backoff_s, s.max_backoff_s)
        while not self._stop.is_set():
            session = self._next_session()
            self.status.session = session
            self._use_credentials()
            self._auth_refused = False
            self._client.will_set(
                topics.state(s.hub_id),
                json.dumps(self._state(False)),
                qos=1,
                retain=True,
            )
            try:
                open_connection(
                    self._client,
                    s.broker,
                    keepalive=s.keepalive_s,
                    clean_start=False,
                    session_expiry_s=SESSION_EXPIRY_S,
                )
            except ConnectFailed as e:
                self.status.last_error = str(e)
                self.status.failures += 1
                log.info("MQTT %s", self.status.last_error)
            else:
                while not self._stop.is_set():
                    if self._client.loop(timeout=1.0) != OK:
                        break
                    self._try_new_user()
                if self._accepted:
                    backoff.reset()
                    self._accepted = False
                elif not self._stop.is_set():
                    self.status.failures += 1
                self._set_connected(False)
            if self._stop.is_set():
                break
            if self._auth_refused and self._creds.refused(time.monotonic()):
                log.warning(
                    "MQTT user %s refused; connecting as the previous user %s",
                    s.username,
                    s.fallback_username,
                )
                continue  # at once, as the previous user
            self._stop.wait(backoff.next())
        with contextlib.suppress(Exception):
            self._client.loop(timeout=0.1)  # flush the DISCONNECT

    def _use_credentials(self) -> None:
        user, password = self.settings.user(self._creds.previous)
        if user is not None:
            set_credentials(self._client, user, password)
        self.status.user = user
        self.status.credential = "previous" if self._creds.previous else "new"

    def _try_new_user(self) -> None:
        """Network thread, connected: while on the previous user, try the new one when the
        backoff says so (a probe thread), and move to it once the broker accepted it."""
        accepted, now = self._probe_accepted, time.monotonic()
        if accepted is not None:
            self._probe_accepted, self._probe = None, None
            self._creds.probed(accepted, now)
            if accepted:
                log.info("MQTT user %s accepted now; moving to it", self.settings.username)
                self._client.disconnect()  # clean: no will; the loop reconnects as new
            return
        if self._probe is None and self._creds.probe_due(now):
            self._probe = threading.Thread(
                target=self._probe_new_user, name="relais-mqtt-probe", daemon=True
            )
            self._probe.start()

    def _probe_new_user(self) -> None:
        """A short connection as the new user, under another client id (the hub's own
        would take its session over); whether the broker accepted it."""
        probe = Client(self.settings.broker, client_id=f"{self.settings.client_id}-probe")
        try:
            probe.connect(timeout=15)
        except MqttError as e:
            log.info("MQTT new user %s still refused: %s", self.settings.username, e)
            self._probe_accepted = False
            return
        with contextlib.suppress(Exception):
            probe.close()
        self._probe_accepted = True

    def _state(self, online: bool) -> dict[str, Any]:
        user = (self.status.user, self.status.credential)
        return state_payload(online, self.status.session, self._config_version(), user=user)

    # -- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self,
        client: PahoClient,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._auth_refused = reason.value in AUTH_REFUSED
            self.status.last_error = f"broker refused the connection: {reason}"
            log.warning("MQTT %s", self.status.last_error)
            return
        session = self.status.session
        online = self._state(True)
        client.publish(topics.state(self.settings.hub_id), json.dumps(online), qos=1, retain=True)
        if self._handlers:
            client.subscribe([(t, 1) for t in self._handlers])
        self.status.connects += 1
        self.status.last_error = None
        self._accepted = True
        log.info(
            "MQTT connected to %s:%d as %s (%s credential, session %d)",
            *self._addr(),
            self.status.user,
            self.status.credential,
            session,
        )
        self._set_connected(True)

    def _on_disconnect(
        self,
        client: PahoClient,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._stop.is_set() and self.status.connected:  # keep a CONNACK refusal
            self.status.last_error = f"disconnected: {reason}"
            log.info("MQTT %s", self.status.last_error)
        self._set_connected(False)

    def _on_publish(
        self,
        client: PahoClient,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._post(self._resolve, mid, reason.is_failure, str(reason))

    def _on_message(self, client: PahoClient, userdata: Any, msg: PahoMessage) -> None:
        self._post(self._dispatch, Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    # -- event-loop side ------------------------------------------------------------------

    def _addr(self) -> tuple[str, int]:
        return self.settings.host, self.settings.port

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing during shutdown
                loop.call_soon_threadsafe(fn, *args)

    def _set_connected(self, up: bool) -> None:
        self.status.connected = up
        self.status.connected_since = time.time() if up else None
        self._post(self.connected.set if up else self.connected.clear)

    def _resolve(self, mid: int, failed: bool, reason: str) -> None:
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if failed:
            fut.set_exception(PublishFailed(f"broker refused the message: {reason}"))
        else:
            fut.set_result(None)

    def _dispatch(self, msg: Message) -> None:
        for topic, handler in self._handlers.items():
            if topic_matches(topic, msg.topic):
                task = asyncio.ensure_future(handler(msg))
                task.add_done_callback(_log_failure)

    def refresh_state(self) -> None:
        """Re-publish the retained online state of this session (e.g. a new config version);
        while disconnected there is nothing to do: the next connect publishes it."""
        if not self.connected.is_set():
            return
        payload = self._state(True)
        fut = self.publish(topics.state(self.settings.hub_id), payload, retain=True)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], *, retain: bool = False
    ) -> asyncio.Future[None]:
        """QoS 1 publish; the future resolves on PUBACK (call from the event loop).

        While disconnected paho keeps the message and sends it after the reconnect.
        """
        if isinstance(payload, dict):
            payload = json.dumps(payload, separators=(",", ":"))
        loop = asyncio.get_running_loop()
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        fut: asyncio.Future[None] = loop.create_future()
        if info.rc not in (OK, NO_CONN):
            fut.set_exception(PublishFailed(error_string(info.rc)))
            return fut
        # The PUBACK callback is posted to this loop, so it runs after this registration.
        self._pending[info.mid] = fut
        return fut

    def cork(self, on: bool) -> None:
        """TCP_CORK: hold small writes so a burst of PUBLISHes shares TCP segments (the
        kernel sends after uncork or 200 ms at most). Saves ~52 header bytes a message."""
        sock: Any = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)
                # Delayed ACKs for the burst of PUBACKs coming back: one pure ACK for all
                # of them instead of one each (Linux re-enters quick-ACK mode after idle).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)

    @property
    def in_flight(self) -> int:
        return len(self._pending)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("MQTT message handler failed", exc_info=task.exception())
