"""The controller's face of the MQTT wrapper: manual acks, and no paho thread.

The owner's thread calls ``pump()`` in its own loop; each message is handed over with its
``mid`` and acked only when the owner says so (after the batch holding it is committed),
so a crash before the commit means the broker redelivers.

Not paho's ``loop()``: it wakes itself through a socket pair, one byte written and read
per queued packet, i.e. per ack here; with our own select the acks of a batch just queue
up and go out together when the socket is writable.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable, Sequence

from hub_agent.mqtt.core import (
    OK,
    Backoff,
    BrokerUrl,
    new_client,
    open_connection,
)

# (topic, payload, mid, qos), called in the pumping thread.
OnMessage = Callable[[str, bytes, int, int], None]


class PumpedClient:
    """``on_connect()`` runs after each accepted CONNACK (subscribe there: a broker that
    lost the session needs it); ``on_disconnect()`` when the link drops."""

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        on_message: OnMessage,
        on_connect: Callable[[], None],
        on_disconnect: Callable[[], None],
        on_refused: Callable[[str], None],
        session_expiry_s: int = 0,
    ) -> None:
        self.url = url
        self.backoff = Backoff()
        self._expiry = session_expiry_s
        self._c = c = new_client(url, client_id, manual_ack=True)
        c.on_connect = lambda cl, u, f, rc, p: (
            on_refused(str(rc)) if rc.is_failure else on_connect()
        )
        c.on_disconnect = lambda *a: on_disconnect()
        c.on_message = lambda cl, u, m: on_message(m.topic, bytes(m.payload), m.mid, m.qos)
        # Queued packets (acks) are written by pump() when select says the socket is
        # writable, not one by one as they are queued.
        c.on_socket_register_write = lambda *a: None

    def connect(self) -> None:
        """Send CONNECT (ConnectFailed if the broker cannot be reached); the CONNACK
        arrives through ``pump()``. A kept session (``session_expiry_s``) is resumed."""
        open_connection(
            self._c, self.url, clean_start=not self._expiry, session_expiry_s=self._expiry
        )

    def subscribe(self, filters: Sequence[str], qos: int = 1) -> None:
        self._c.subscribe([(f, qos) for f in filters])

    def pump(self, timeout: float) -> bool:
        """One pass: select, read, write what is queued, keepalive. False: link lost."""
        c = self._c
        sock = c.socket()
        if sock is None:
            return False
        wlist = [sock] if c.want_write() else []
        try:
            readable, _w, _x = select.select([sock], wlist, [], timeout)
        except (OSError, ValueError):
            return False
        rc = c.loop_read() if readable else OK
        if rc == OK and c.want_write():
            rc = c.loop_write()
        if rc == OK:
            rc = c.loop_misc()  # keepalive
        return rc == OK

    def reconnect(self) -> None:
        """One try; a failure shows as the next ``pump()`` returning False."""
        with contextlib.suppress(OSError):
            self._c.reconnect()

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self._c.ack(mid, qos)

    def flush(self) -> None:
        """Write what is queued (the last acks) without waiting for anything."""
        with contextlib.suppress(OSError, ValueError):
            self.pump(0)

    def close(self) -> None:
        self._c.disconnect()
        with contextlib.suppress(OSError, ValueError):
            self._c.loop_write()  # no loop runs any more: send the DISCONNECT ourselves
