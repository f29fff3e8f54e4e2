"""The controller finishes credential rotations: it retires a hub's previous broker user
once the hub's retained ``state`` says it is connected as the new one.

``hubctl rotate`` used to be the only one to retire, and only while it waited; a hub that
took the new user later (its link tries it again on a backoff, ``hub_agent.mqtt.fallback``)
kept two working users until someone ran ``hubctl rotate HUB --retire``. Now every
controller follows the hubs' ``state`` messages (retained: a controller started later gets
each hub's latest at once) and the one holding the housekeeping lease
(``controller.leader``) retires, through ``enroll.retire``: the password file rewritten
and the broker reloaded the same way a rotation does. Retiring twice is harmless (the
second finds no rotation pending), and a lock file in the state folder keeps two
processes of one centre from rewriting its files at the same moment.

A state counts only when it reports the config the centre last pushed, or a later one: a
hub that still runs an older config may not have the password now in the broker, and its
previous user is its way back in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

from hub_agent.mqtt.client import Client
from hub_agent.mqtt.core import Backoff, BrokerUrl, MqttError
from provisioning import registry, topics
from provisioning.credentials import Credentials, adopted, from_secret
from provisioning.enroll import EnrollError, retire
from provisioning.statedir import StateDir
from provisioning.storage import ERRORS, Database, DbUrl, connect

log = logging.getLogger("relais.controller.retirement")

EVERY_S = 2.0


def should_retire(creds: Credentials | None, state: dict[str, Any], desired: int) -> bool:
    """A rotation pending for this hub, and its state on the new user with a config at
    least as new as the last one pushed (``desired``, the registry's version)."""
    if creds is None or creds.previous is None or not adopted(creds, state):
        return False
    version = state.get("config_version")
    return isinstance(version, int) and not isinstance(version, bool) and version >= desired


def candidate(state: Any) -> TypeGuard[dict[str, Any]]:
    """Worth a look (a file read, a query): online on a "new" credential. Every other
    state is dropped before touching the state folder, so 20,000 retained states at a
    controller's start cost a read only for hubs that may have a rotation to finish."""
    return (
        isinstance(state, dict) and state.get("online") is True and state.get("credential") == "new"
    )


@contextlib.contextmanager
def state_lock(state: StateDir) -> Iterator[None]:
    path = state.root / "rotation.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def retire_if_due(state: StateDir, db: Database, hub_id: str, msg: dict[str, Any]) -> str | None:
    """Retire ``hub_id``'s previous user when ``msg`` (its state) says so; the user retired."""
    with state_lock(state):
        creds = from_secret(hub_id, state.read_secret(hub_id))
        if creds is None or creds.previous is None:
            return None
        row = registry.get_hub(db, hub_id) or {}
        if not should_retire(creds, msg, int(row.get("desired_version") or 0)):
            return None
        return retire(state, hub_id)


class Retirer:
    """A thread with its own MQTT client (states) and database connection; it acts only
    while ``leading()`` (the housekeeping lease) is true."""

    def __init__(
        self,
        state: StateDir,
        db_url: DbUrl,
        broker: BrokerUrl,
        leading: Callable[[], bool],
        every_s: float = EVERY_S,
    ) -> None:
        self.state = state
        self.db_url = db_url
        self.broker = broker
        self.leading = leading
        self.every_s = every_s
        self.retired: list[tuple[str, str]] = []  # (hub, user), for logs and tests
        self._states: dict[str, dict[str, Any]] = {}  # candidates, newest state each
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retirement", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        where = topics.parse(topic)
        if where is None or where[1] != "state":
            return
        try:
            msg = json.loads(payload) if payload else None
        except ValueError:
            return
        with self._lock:
            if candidate(msg):
                self._states[where[0]] = msg
            else:
                self._states.pop(where[0], None)

    def run_once(self, db: Database) -> int:
        """One pass over the candidates (leader only); how many users it retired."""
        if not self.leading():
            return 0
        with self._lock:
            todo, self._states = self._states, {}
        done = 0
        for hub_id, msg in todo.items():
            try:
                old = retire_if_due(self.state, db, hub_id, msg)
            except (EnrollError, OSError) as e:
                log.error("hub %s: retiring the previous broker user failed: %s", hub_id, e)
                with self._lock:
                    self._states.setdefault(hub_id, msg)  # again on the next pass
                continue
            if old is not None:
                log.info("hub %s: on its new broker user; previous user %s retired", hub_id, old)
                self.retired.append((hub_id, old))
                done += 1
        return done

    def _connect(self) -> Client:
        cid = f"relais-retirement-{socket.gethostname()}-{os.getpid()}"
        client = Client(self.broker, client_id=cid, on_message=self.on_message)
        client.connect()
        client.subscribe([topics.topic("+", "state")])
        return client

    def _run(self) -> None:
        client: Client | None = None
        db: Database | None = None
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                if client is None or not client.connected:
                    if client is not None:
                        client.close()
                    client = None
                    client = self._connect()
                    backoff.reset()
                db = db or connect(self.db_url)
                self.run_once(db)
            except MqttError as e:
                log.warning("retirement: %s", e)
                self._stop.wait(backoff.next())
                continue
            except ERRORS:
                log.exception("retirement: database error; a new connection next pass")
                if db is not None:
                    db.close()
                db = None
            self._stop.wait(self.every_s)
        if client is not None:
            client.close()
        if db is not None:
            db.close()
