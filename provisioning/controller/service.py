"""`hubctl controller run`: MQTT ingest into the registry, plus the fleet web page.

Ingest is built for kill -9 at any moment: the MQTT session is persistent (stable client
id, session expiry) and acks are manual, sent only after the batch holding the message is
committed. A crash before the commit means the broker redelivers; duplicates are dropped
by ``(hub_id, seq)``. paho's network thread only appends to a queue; one writer thread
parses, decides (``Ingestor``) and commits a batch per round.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import sqlite_utils
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from provisioning import registry, topics
from provisioning.controller.ingest import Ingestor
from provisioning.mqttclient import BrokerUrl, MqttError
from provisioning.statedir import StateDir

log = logging.getLogger("relais.controller")

SESSION_EXPIRY_S = 7 * 86_400  # a controller down for a week still gets everything queued
MAX_BATCH = 2000
DOWNSAMPLE_EVERY_S = 3600.0


@dataclass
class Stats:
    started: float
    committed: int = 0
    batches: int = 0
    last_commit: float = 0.0


class Ingest:
    """One controller process's ingestion: MQTT client + writer thread."""

    def __init__(
        self,
        db_path: Path | str,
        url: BrokerUrl,
        shared: bool = False,
        client_id: str | None = None,
        flush_interval_s: float = 0.05,
    ) -> None:
        self.db = registry.open_registry(db_path)
        self.url = url
        self.shared = shared
        self.flush_interval_s = flush_interval_s
        self.ingestor = Ingestor(registry.load_cursors(self.db), registry.open_gaps(self.db))
        self.queue: collections.deque[tuple[str, bytes, int, int, float]] = collections.deque()
        self.stats = Stats(started=time.time())
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        cid = client_id or f"relais-controller-{socket.gethostname()}"
        # A kept session needs a stable id. An anonymous shared member gets a throwaway
        # session instead: a dead member's kept session would go on taking its share.
        self.persistent = client_id is not None or not shared
        if not self.persistent:
            cid += f"-{os.getpid()}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self.client.max_inflight_messages_set(1000)
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        if url.tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    # paho's network thread: as little as possible
    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.queue.append((msg.topic, msg.payload, msg.mid, msg.qos, time.time()))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error("broker %s refused the controller: %s", self.url, rc)
            return
        # Subscribing again on every connect is harmless with a kept session, and needed
        # when the broker lost it.
        client.subscribe([(f, 1) for f in topics.ingest_filters(self.shared)])
        self._connected.set()
        log.info("controller connected to %s (shared=%s)", self.url, self.shared)

    def _on_disconnect(self, *args: Any) -> None:
        self._connected.clear()

    def start(self, timeout: float = 10) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S if self.persistent else 0
        try:
            self.client.connect(
                self.url.host,
                self.url.port,
                keepalive=30,
                clean_start=not self.persistent,
                properties=props,
            )
        except OSError as e:
            raise MqttError(f"cannot reach {self.url}: {e.strerror or e}") from None
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.client.loop_stop()
            raise MqttError(f"controller could not connect to {self.url}")
        self._writer.start()

    def _drain(self) -> int:
        items: list[tuple[str, bytes, int, int, float]] = []
        while self.queue and len(items) < MAX_BATCH:
            items.append(self.queue.popleft())
        if not items:
            return 0
        for topic_name, payload, _mid, _qos, now in items:
            self.ingestor.add(topic_name, payload, now)
        registry.write_batch(self.db, self.ingestor.take())
        # Only now, with the batch on disk, may the broker forget these messages.
        for _t, _p, mid, qos, _n in items:
            if qos > 0:
                self.client.ack(mid, qos)
        self.stats.committed += len(items)
        self.stats.batches += 1
        self.stats.last_commit = time.time()
        return len(items)

    def _write_loop(self) -> None:
        next_downsample = time.monotonic() + 60
        while not self._stop.is_set():
            try:
                n = self._drain()
            except Exception:  # keep ingesting: a bad batch is logged, its acks withheld
                log.exception("ingest batch failed; the broker will redeliver it")
                n = 0
                time.sleep(1)
            if time.monotonic() > next_downsample:
                removed = registry.downsample_health(self.db)
                if removed:
                    log.info("downsampled %d old health samples", removed)
                next_downsample = time.monotonic() + DOWNSAMPLE_EVERY_S
            if n < MAX_BATCH:
                self._stop.wait(self.flush_interval_s)
        while self._drain():
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._writer.is_alive():
            self._writer.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()


def run_controller(
    state: StateDir,
    db: sqlite_utils.Database,
    url: BrokerUrl,
    http: tuple[str, int] | None,
    shared: bool = False,
    client_id: str | None = None,
) -> int:
    from provisioning.controller.web import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    db_path = db.conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"
    ingest = Ingest(db_path, url, shared=shared, client_id=client_id)
    try:
        ingest.start()
    except MqttError as e:
        log.error("%s", e)
        return 2
    server = serve(db_path, http[0], http[1]) if http else None
    if server is not None:
        log.info("fleet page on http://%s:%d/", *server.server_address[:2])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    last = 0
    while not stop.wait(10):
        rate = (ingest.stats.committed - last) / 10
        last = ingest.stats.committed
        c = ingest.ingestor.counters
        log.info(
            "ingest %.0f msg/s, total %d, duplicates %d, bad %d",
            rate,
            ingest.stats.committed,
            c.duplicates,
            c.bad,
        )
    if server is not None:
        server.shutdown()
    ingest.stop()
    return 0
