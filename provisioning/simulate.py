"""A simulated fleet against a real broker: `hubctl simulate` and bench/bench_ingest.py.

Each simulated hub keeps its own ``seq``, session number and day curve: devices and data
follow the hours of the day by kind (schools by day, mairies in office hours, clinics
round the clock), CPU follows devices, the disk fills slowly, latency and loss wander.
Outages are realistic for the field: a hub drops off (the broker publishes its will,
here sent on its behalf), its samples wait in its outbox, and on return it opens a new
session and drains the backlog, so ``seq`` stays contiguous as with the real agent.

Hubs share ``connections`` MQTT connections (one per hub does not fit 2,000 hubs in one
Python process); the controller cannot tell the difference, topics and payloads are the
hubs' own.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub_agent.mqtt.client import Client
from hub_agent.mqtt.core import BrokerUrl
from provisioning import registry, topics
from provisioning.geo import REGIONS, default_position
from provisioning.storage import Database

KINDS = (("school", 1488), ("mairie", 136), ("clinic", 253))  # Togo's fleet mix
PEAK_HOURS = {"school": (7.5, 17.0), "mairie": (8.0, 17.5), "clinic": (0.0, 24.0)}


def fleet_ids(n: int) -> list[registry.HubRecord]:
    """``n`` hubs with the real kind mix, spread over the five regions."""
    total = sum(k for _, k in KINDS)
    kinds = [kind for kind, k in KINDS for _ in range(math.ceil(k * n / total))][:n]
    random.Random(7).shuffle(kinds)
    regions = list(REGIONS)
    out = []
    for i, kind in enumerate(kinds):
        region = regions[i % len(regions)]
        hub_id = f"sim-{region.lower()}-{kind}-{i:05d}"
        lat, lon = default_position(hub_id, region)
        out.append(
            registry.HubRecord(
                hub_id, kind, f"{kind.title()} {region} {i}", region, None, lat, lon, ("simulated",)
            )
        )
    return out


@dataclass
class SimHub:
    id: str
    kind: str
    rng: random.Random
    seq: int = 0
    event_seq: int = 0
    session: int = 1
    online: bool = True
    back_at: float = 0.0
    disk: float = 20.0
    served: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def activity(self, ts: float) -> float:
        hour = (ts / 3600 + 0) % 24  # Africa/Lome is UTC+0
        start, end = PEAK_HOURS[self.kind]
        if start <= hour <= end:
            return 0.5 + 0.5 * math.sin(math.pi * (hour - start) / max(end - start, 1))
        return 0.08

    def sample(self, ts: float) -> dict[str, Any]:
        self.seq += 1
        a = self.activity(ts)
        devices = max(
            0,
            round(a * {"school": 60, "mairie": 25, "clinic": 15}[self.kind] + self.rng.gauss(0, 2)),
        )
        self.served += int(devices * self.rng.uniform(2e4, 8e4))
        self.disk = min(99.0, self.disk + self.rng.uniform(0, 0.002))
        return {
            "hub_id": self.id,
            "seq": self.seq,
            "ts": round(ts, 3),
            "cv": 1,
            "up": int(ts) % 864_000,
            "cpu": round(min(100, 5 + devices * 0.9 + self.rng.uniform(0, 6))),
            "ld": round(devices / 40 + self.rng.uniform(0, 0.3), 2),
            "mem": round(35 + devices * 0.4 + self.rng.uniform(0, 4)),
            "dsk": round(self.disk),
            "dfr": int((100 - self.disk) * 300),
            "lat": round(self.rng.lognormvariate(3.6, 0.35), 1),
            "loss": max(0, round(self.rng.gauss(0.5, 1))),
            "dev": devices,
            "auth": max(0, devices - self.rng.randint(0, 3)),
            "srv": self.served,
        }

    def state(self, online: bool, ts: float) -> dict[str, Any]:
        return {
            "online": online,
            "ts": round(ts, 3),
            "agent_version": "sim",
            "config_version": 1,
            "session": self.session,
        }

    def event(self, kind: str, ts: float, **extra: Any) -> dict[str, Any]:
        self.event_seq += 1
        return {"hub_id": self.id, "seq": self.event_seq, "ts": round(ts, 3), "type": kind, **extra}


@dataclass
class SimStats:
    health: int = 0
    events: int = 0
    states: int = 0
    outages: int = 0


class Simulator:
    def __init__(
        self,
        url: BrokerUrl,
        hubs: list[registry.HubRecord],
        rate: float = 1.0,
        connections: int = 0,
        outage_pct: float = 5.0,
        seed: int = 1,
    ) -> None:
        self.rng = random.Random(seed)
        self.hubs = [SimHub(h.id, h.kind, random.Random(f"{seed}-{h.id}")) for h in hubs]
        self.period = 1.0 / rate
        n_conn = connections or max(1, math.ceil(len(hubs) / 100))
        self.clients = [Client(url, client_id=f"relais-sim-{i}") for i in range(n_conn)]
        self.outage_pct = outage_pct
        self.stats = SimStats()
        self._stop = threading.Event()

    def _client(self, i: int) -> Client:
        return self.clients[i % len(self.clients)]

    def _send(self, i: int, stream: str, body: dict[str, Any], retain: bool = False) -> None:
        hub = self.hubs[i]
        self._client(i).publish_nowait(
            topics.topic(hub.id, stream),
            json.dumps(body, separators=(",", ":")).encode(),
            qos=1,
            retain=retain,
        )

    def start(self) -> None:
        for c in self.clients:
            c.connect()
        now = time.time()
        for i, h in enumerate(self.hubs):
            self._send(i, "state", h.state(True, now), retain=True)
            self._send(i, "events", h.event("agent_start", now))
            self.stats.states += 1
            self.stats.events += 1

    def _maybe_outage(self, i: int, hub: SimHub, now: float) -> None:
        # About outage_pct% of hubs go through one outage per simulated ~10 minutes.
        if hub.online and self.rng.random() < self.outage_pct / 100 * self.period / 600:
            hub.online = False
            hub.back_at = now + self.rng.uniform(5, 60)
            self._send(i, "state", hub.state(False, now), retain=True)  # its will
            self.stats.outages += 1
            self.stats.states += 1
        elif not hub.online and now >= hub.back_at:
            hub.online = True
            hub.session += 1
            self._send(i, "state", hub.state(True, now), retain=True)
            self._send(i, "events", hub.event("uplink_back", now, offline_s=len(hub.outbox)))
            self.stats.states += 1
            self.stats.events += 1
            for body in hub.outbox:  # store-and-forward drain
                self._send(i, "health", body)
                self.stats.health += 1
            hub.outbox.clear()

    def run(self, duration: float, on_tick: Callable[[SimStats], None] | None = None) -> None:
        """Publish for ``duration`` seconds (0: until stop()), each hub at its own phase."""
        n = len(self.hubs)
        start = time.monotonic()
        wall0 = time.time()
        tick = 0
        while not self._stop.is_set():
            elapsed = time.monotonic() - start
            if duration and elapsed >= duration:
                break
            # the hubs due in this slice of the period, so load is smooth over time
            slots = 20
            slice_i = tick % slots
            for i in range(slice_i, n, slots):
                hub = self.hubs[i]
                now = wall0 + elapsed
                if self.outage_pct:
                    self._maybe_outage(i, hub, now)
                body = hub.sample(now)
                if hub.online:
                    self._send(i, "health", body)
                    self.stats.health += 1
                else:
                    hub.outbox.append(body)
            tick += 1
            if on_tick is not None and slice_i == 0:
                on_tick(self.stats)
            target = start + tick * self.period / slots
            delay = target - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def finish(self) -> None:
        """Bring every hub back (drain outboxes) so nothing is left unsent."""
        now = time.time()
        for i, hub in enumerate(self.hubs):
            if not hub.online:
                hub.back_at = 0
                self._maybe_outage(i, hub, now)

    def stop(self) -> None:
        self._stop.set()

    def close(self, timeout: float = 30) -> None:
        # wait until paho has written and got acks for everything queued
        deadline = time.monotonic() + timeout
        for c in self.clients:
            c.wait_idle(max(0.1, deadline - time.monotonic()))
            c.close()


def simulate_command(
    url: BrokerUrl,
    hubs: int,
    rate: float,
    duration: float,
    connections: int,
    outage_pct: float,
    db: Database | None,
) -> int:
    fleet = fleet_ids(hubs)
    if db is not None:
        registry.register_many(db, fleet)
    sim = Simulator(url, fleet, rate=rate, connections=connections, outage_pct=outage_pct)
    sim.start()
    signal.signal(signal.SIGTERM, lambda *_: sim.stop())
    signal.signal(signal.SIGINT, lambda *_: sim.stop())
    last = [time.monotonic(), 0]

    def report(st: SimStats) -> None:
        t = time.monotonic()
        if t - last[0] >= 5:
            print(
                f"health {st.health} ({(st.health - last[1]) / (t - last[0]):.0f}/s), "
                f"events {st.events}, outages {st.outages}",
                flush=True,
            )
            last[0], last[1] = t, st.health

    sim.run(duration, report)
    sim.finish()
    sim.close()
    st = sim.stats
    print(
        f"done: {len(fleet)} hubs, health {st.health}, events {st.events}, "
        f"states {st.states}, outages {st.outages}",
        flush=True,
    )
    return 0
