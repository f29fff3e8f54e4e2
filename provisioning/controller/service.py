"""`hubctl controller run`: MQTT ingest into the registry, plus the fleet web page.

Ingest is built for kill -9 at any moment: the MQTT session is persistent (stable client
id, session expiry) and acks are manual, sent only after the batch holding the message is
committed. A crash before the commit means the broker redelivers; duplicates are dropped
by ``(hub_id, seq)``. paho's network thread only appends to a queue; one writer thread
parses, decides (``Ingestor``) and commits a batch per round.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hub_agent.mqtt.core import BrokerUrl, ConnectFailed, MqttError
from hub_agent.mqtt.pumped import PumpedClient
from hub_agent.sessions.service import Redemption
from provisioning import balances, registry, topics, vouchers
from provisioning.controller.ingest import Ingestor
from provisioning.controller.leader import Housekeeper
from provisioning.controller.retirement import Retirer
from provisioning.registry import Batch
from provisioning.statedir import StateDir
from provisioning.storage import ERRORS, Database, DbUrl, connect, transaction
from provisioning.vouchers import Finding

log = logging.getLogger("relais.controller")

SUMMARY_EVERY_S = 5.0  # hubs' last_seen/last_health refreshed this often
SESSION_EXPIRY_S = 7 * 86_400  # a controller down for a week still gets everything queued
MAX_BATCH = 2000  # packets read per pass
# Commit (then ack) at this many messages: half the broker's in-flight window (1,000 in our
# mosquitto.conf), so the broker keeps sending while a batch commits.
FLUSH_AT = 500


@dataclass
class Stats:
    started: float
    committed: int = 0
    batches: int = 0
    lock_waits: int = 0
    voucher_findings: int = 0
    reconnects: int = 0
    last_commit: float = 0.0


def reconcile_redemptions(db: Database, batch: Batch) -> list[Finding]:
    """Central vouchers redeemed on hubs (``voucher_redeemed`` events of this batch),
    recorded in the same transaction as the events; returns what they reveal: a code used
    by more devices than it allows across hubs that were offline, or one never issued."""
    redemptions = []
    for hub_id, _seq, _ts, kind, data in batch.events:
        if kind != "voucher_redeemed":
            continue
        try:
            redemptions.append(Redemption.from_event(hub_id, json.loads(data)))
        except ValueError as e:  # a malformed report is stored as an event, not fatal
            log.warning("hub %s: bad voucher_redeemed event: %s", hub_id, e)
    return vouchers.reconcile(db, redemptions) if redemptions else []


class Ingest:
    """One controller process's ingestion: a reader thread and a writer thread.

    The reader owns the MQTT client (no paho loop thread): it reads whatever the socket
    holds, parses and decides each message as it comes (``Ingestor``), and every
    ``flush_interval_s`` or ``FLUSH_AT`` messages hands the batch to the writer. The writer
    commits it (SQLite releases the GIL while it writes and fsyncs, so this overlaps with
    reading) and passes the batch's message ids back; the reader acks them. Only a
    committed message is ever acked.
    """

    def __init__(
        self,
        db_path: Path | str | DbUrl,
        url: BrokerUrl,
        shared: bool = False,
        client_id: str | None = None,
        flush_interval_s: float = 0.05,
        summary_every_s: float = SUMMARY_EVERY_S,
    ) -> None:
        self.db = registry.open_registry(db_path)
        self.housekeeper = Housekeeper(self.db.url, shared)
        self.url = url
        self.shared = shared
        self.flush_interval_s = flush_interval_s
        self.summary_every_s = summary_every_s
        self.ingestor = self._fresh_ingestor()
        self.pending: list[tuple[int, int]] = []  # (mid, qos) read, not yet handed over
        self.to_write: queue.Queue[tuple[Batch, list[tuple[int, int]]] | None] = queue.Queue(4)
        self.to_ack: collections.deque[list[tuple[int, int]]] = collections.deque()
        self.write_failed = threading.Event()
        self.first_pending = 0.0
        self.stats = Stats(started=time.time())
        self._next_summary = 0.0
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-read", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="ingest-write", daemon=True)
        cid = client_id or f"relais-controller-{socket.gethostname()}"
        # A kept session needs a stable id. An anonymous shared member gets a throwaway
        # session instead: a dead member's kept session would go on taking its share.
        self.persistent = client_id is not None or not shared
        if not self.persistent:
            cid += f"-{os.getpid()}"
        self.client = PumpedClient(
            url,
            cid,
            on_message=self._on_message,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_refused=self._on_refused,
            session_expiry_s=SESSION_EXPIRY_S if self.persistent else 0,
        )

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self.ingestor.add(topic, payload, time.time())
        if not self.pending:
            self.first_pending = time.monotonic()
        self.pending.append((mid, qos))

    def _on_refused(self, reason: str) -> None:
        log.error("broker %s refused the controller: %s", self.url, reason)

    def _on_connect(self) -> None:
        # Subscribing again on every connect is harmless with a kept session, and needed
        # when the broker lost it.
        self.client.subscribe(topics.ingest_filters(self.shared))
        self.client.backoff.reset()
        self._connected.set()
        log.info("controller connected to %s (shared=%s)", self.url, self.shared)

    def _on_disconnect(self) -> None:
        self._connected.clear()
        self._forget_unacked()

    def _forget_unacked(self) -> None:
        # Messages not acked come again on the next connection: forget them, let the
        # writer finish what it has, and take the cursors back from what is on disk.
        self.pending.clear()
        self.to_write.join()
        self.to_ack.clear()
        self.ingestor = self._fresh_ingestor()

    def _fresh_ingestor(self) -> Ingestor:
        gaps = {} if self.shared else registry.open_gaps(self.db)
        return Ingestor(registry.load_cursors(self.db), gaps, shared=self.shared)

    def start(self, timeout: float = 10) -> None:
        self.client.connect()
        self._writer.start()
        self._thread.start()
        self.housekeeper.start()  # downsampling (and shared gaps) by one controller
        if not self._connected.wait(timeout):
            self.stop()
            raise ConnectFailed(f"controller could not connect to {self.url}")

    def hand_over(self) -> int:
        """Give what was read to the writer (blocks only if it is 4 batches behind)."""
        n = len(self.pending)
        summary = time.monotonic() >= self._next_summary
        if not n and not (summary and self.ingestor.summary):
            return 0
        if summary:
            self._next_summary = time.monotonic() + self.summary_every_s
        self.to_write.put((self.ingestor.take(summary=summary), self.pending))
        self.pending = []
        return n

    def _commit(self, batch: Batch) -> None:
        with transaction(self.db):  # SQLite: waits for another controller's write lock
            registry.write_batch(self.db, batch)
            findings = reconcile_redemptions(self.db, batch)
            balances.fold_events(self.db, batch.events)  # roaming: usage per code
        self.stats.lock_waits = self.db.lock_waits
        for f in findings:
            self.stats.voucher_findings += 1
            log.warning(
                "voucher %s %s: plan %s, %d device(s) allowed, redeemed on %s",
                f.code, f.kind, f.plan_id, f.devices_max, ", ".join(f.hubs),
            )  # fmt: skip

    def _write_loop(self) -> None:
        while True:
            item = self.to_write.get()
            try:
                if item is None:
                    return
                batch, mids = item
                if self.write_failed.is_set():
                    # Built on the failed batch's cursors: committing it would make the
                    # failed samples look like duplicates when the broker sends them again.
                    continue
                try:
                    self._commit(batch)
                except ERRORS:
                    log.exception("ingest commit failed; reconnecting for redelivery")
                    if self.db.broken():
                        self.db = connect(self.db.url)
                    self.write_failed.set()
                    continue
                self.to_ack.append(mids)
                self.stats.committed += len(mids)
                self.stats.batches += 1
                if mids:
                    self.stats.last_commit = time.time()
            finally:
                self.to_write.task_done()

    def _ack_committed(self) -> None:
        while self.to_ack:
            for mid, qos in self.to_ack.popleft():
                self.client.ack(mid, qos)

    def _run(self) -> None:
        c = self.client
        while not self._stop.is_set():
            up = c.pump(self.flush_interval_s / 2)
            if not up or self.write_failed.is_set():
                self.stats.reconnects += 1
                if self.write_failed.is_set():
                    # paho's reconnect() does not call on_disconnect: forget here, before
                    # the writer may commit again (it drops batches while the flag is set).
                    self._forget_unacked()
                    self.write_failed.clear()
                self._stop.wait(c.backoff.next())  # the wrapper's one reconnect policy
                c.reconnect()  # a lost link: on_disconnect forgot what was not acked
                continue
            self._ack_committed()
            due = time.monotonic() - self.first_pending >= self.flush_interval_s
            if len(self.pending) >= FLUSH_AT or due or not self.pending:
                self.hand_over()
        self._next_summary = 0.0
        self.hand_over()
        self.to_write.join()
        self._ack_committed()
        c.flush()  # the last acks

    def stop(self) -> None:
        self._stop.set()
        self.housekeeper.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._writer.is_alive():
            self.to_write.put(None)
            self._writer.join(timeout=30)
        self.client.close()


def run_controller(
    state: StateDir,
    db: Database,
    url: BrokerUrl,
    http: tuple[str, int] | None,
    shared: bool = False,
    client_id: str | None = None,
) -> int:
    from provisioning.controller.web import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    db_path = db.url
    ingest = Ingest(db_path, url, shared=shared, client_id=client_id)
    try:
        ingest.start()
    except MqttError as e:
        log.error("%s", e)
        return 2
    desk = balances.BalanceDesk(db_path, url, state.signing_key(), client_id=None)
    try:  # roaming: hubs' balance queries answered, signed
        desk.start()
    except MqttError as e:
        log.error("balances: %s", e)
    # rotations: the lease holder retires a hub's previous broker user once it is unused
    retirer = Retirer(state, db_path, url, ingest.housekeeper.leading.is_set)
    retirer.start()
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
    retirer.stop()
    ingest.stop()
    desk.stop()
    return 0
