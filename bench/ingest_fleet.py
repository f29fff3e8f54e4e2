"""What the ingest benchmarks share: a broker without disk persistence, controller and
bare-paho consumer processes (this file, run with ``--consumer``), a backlog publisher and
the sustained simulated fleet against one controller, checked in the registry.

Used by bench_ingest.py (SQLite) and bench_ingest_pg.py (PostgreSQL); not run by itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_agent.mqtt.client import Client  # noqa: E402
from hub_agent.mqtt.core import BrokerUrl  # noqa: E402
from lab.broker import Broker  # noqa: E402
from provisioning import registry, simulate, topics  # noqa: E402

PY = sys.executable
IDLE_S = [1.0]  # a consumer is done once nothing new came for this long


class BenchBroker(Broker):
    """The test broker without disk persistence (its autosave would dominate a backlog)."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        text = conf.read_text().replace("persistence true", "persistence false")
        conf.write_text(text.replace("max_queued_messages 100000", "max_queued_messages 0"))
        return conf


# --- consumer processes (this file run with --consumer) - ------------------------------


def run_consumer(args: argparse.Namespace) -> None:
    """Drain what the broker holds for our session; print first/last message times."""
    url = BrokerUrl.parse(args.url)
    if args.consumer == "bare":
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        count = 0
        first = last = cpu0 = 0.0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(1000)

        def on_message(client: Any, userdata: Any, msg: Any) -> None:  # count, nothing else
            nonlocal count, first, last, cpu0
            count += 1
            last = time.time()
            if count == 1:
                first = last
                cpu0 = time.process_time()

        subscribed = threading.Event()
        c.on_message = on_message
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_connect = lambda cl, *a: cl.subscribe(
            [(f, 1) for f in topics.ingest_filters(args.shared)]
        )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        _sleep_until(args.start_at)
        c.connect(url.host, url.port, clean_start=False, properties=props)
        c.loop_start()
        subscribed.wait(10)
        _wait_idle(args, lambda: count)
        c.disconnect()
        c.loop_stop()
        cpu = time.process_time() - cpu0
        print(json.dumps({"count": count, "first": first, "last": last, "cpu": cpu}), flush=True)
        return

    from provisioning.controller.service import Ingest

    ing = Ingest(args.db, url, shared=args.shared, client_id=args.client_id)
    first_seen = [0.0, 0.0]

    def seen() -> int:
        if not first_seen[0] and (ing.pending or ing.stats.committed):
            first_seen[0] = time.time()
            first_seen[1] = time.process_time()
        return ing.stats.committed

    _sleep_until(args.start_at)
    ing.start()
    _wait_idle(args, seen)
    last = ing.stats.last_commit
    cpu = time.process_time() - first_seen[1]
    ing.stop()
    print(
        json.dumps(
            {
                "count": ing.stats.committed,
                "first": first_seen[0],
                "last": last,
                "cpu": cpu,
                "lock_waits": ing.stats.lock_waits,
                "batches": ing.stats.batches,
                "reconnects": ing.stats.reconnects,
            }
        ),
        flush=True,
    )


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def _wait_idle(args: argparse.Namespace, count: Callable[[], int]) -> None:
    """Prime mode: return at once (session and subscription now exist). Otherwise return
    once messages came and nothing new arrived for a second."""
    if args.prime:
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 120
    prev, still = -1, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.01)
        n = count()
        if n != prev:
            prev, still = n, time.monotonic()
        elif n > 0 and time.monotonic() - still > args.idle_s:
            return


def consumer(
    url: str,
    kind: str,
    client_id: str,
    db: Path | str,
    shared: bool,
    prime: bool,
    start_at: float = 0.0,
    idle_s: float | None = None,
) -> subprocess.Popen[str]:
    cmd = [
        PY,
        __file__,
        "--consumer",
        kind,
        "--url",
        url,
        "--client-id",
        client_id,
        "--db",
        str(db),
    ]
    if shared:
        cmd.append("--shared")
    if prime:
        cmd.append("--prime")
    if start_at:
        cmd += ["--start-at", str(start_at)]
    cmd += ["--idle-s", str(idle_s or IDLE_S[0])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def result(p: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 0, f"consumer failed: {out}"
    data: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return data


def publish_backlog(url: str, hubs: list[registry.HubRecord], n: int, seq0: dict[str, int]) -> None:
    """n health messages, round-robin over the hubs, seq continuing per hub."""
    clients = [Client(BrokerUrl.parse(url), client_id=f"bench-pub-{i}") for i in range(4)]
    for c in clients:
        c.connect()
    for i in range(n):
        h = hubs[i % len(hubs)]
        seq0[h.id] += 1
        body = {
            "hub_id": h.id,
            "seq": seq0[h.id],
            "ts": time.time(),
            "cpu": 12,
            "dsk": 40,
            "dev": 5,
            "srv": 1_000_000,
        }
        clients[i % 4].publish_nowait(
            topics.topic(h.id, "health"), json.dumps(body, separators=(",", ":")).encode()
        )
    for c in clients:
        assert c.wait_idle(120)
        c.close()


@dataclass(frozen=True)
class FleetRun:
    """What the simulated fleet sent and one controller stored, checked in the registry."""

    seqs: dict[str, int]  # per hub, the last seq it sent
    stored: int  # messages the controller stored (health, state and events)
    lost: int  # health samples sent and not stored
    not_contiguous: int  # hubs whose stored seqs are not exactly 1..last
    gaps: int  # gaps the controller recorded


def sustained(
    url: str,
    db_url: str,
    hubs: list[registry.HubRecord],
    seconds: float,
    client_id: str,
) -> FleetRun:
    """The fleet simulator (1 health sample/s, outages drained on return) for ``seconds``
    against one controller process on ``db_url`` (SQLite or PostgreSQL); printed and
    checked once the controller has gone idle."""
    db = registry.open_registry(db_url)
    try:
        registry.register_many(db, hubs)
        # its session exists before the fleet publishes, however long the process takes
        # to start on a loaded machine (it took 12 s: the whole run was lost)
        result(consumer(url, "controller", client_id, db_url, False, prime=True))
        # Done after 10 s without a commit, not 1 s: on a loaded machine (load 20) a commit
        # or a read stalled behind it can last over a second; the controller then took it
        # for the end of the stream and quit, and what was still coming counted as lost.
        ctl = consumer(url, "controller", client_id, db_url, False, prime=False, idle_s=10.0)
        sim = simulate.Simulator(BrokerUrl.parse(url), hubs, rate=1.0, outage_pct=20)
        sim.start()
        t0 = time.monotonic()
        sim.run(seconds)
        sim.finish()
        sim.close()
        elapsed = time.monotonic() - t0
        out = result(ctl)
        stored = int(out["count"])
        lost = missing_samples(db_url, sim, timeout=10)
        counts = registry.seq_counts(db)
        gaps = int(db.execute("SELECT count(*) FROM gaps").fetchone()[0])
    finally:
        db.close()
    end_session(url, client_id)  # else it would queue a copy of every later message
    bad = sum(1 for h in sim.hubs if h.seq and counts.get(h.id) != (h.seq, 1, h.seq))
    sent = sim.stats.health
    print(
        f"  {len(hubs)} hubs x 1 sample/s for {seconds:.0f} s, {sim.stats.outages} outages"
        f" (drained on return): sent {sent} health msgs in {elapsed:.1f} s"
        f" ({sent / elapsed:.0f}/s); controller stored {stored} msgs (incl. state/events);"
        f" lost {lost}, hubs not contiguous {bad}, gaps recorded {gaps},"
        f" controller reconnects {int(out.get('reconnects', 0))}"
    )
    return FleetRun({h.id: h.seq for h in sim.hubs}, stored, lost, bad, gaps)


def end_session(broker_url: str, client_id: str) -> None:
    """Retire a kept session (connect clean with expiry 0), as docs/operations.md says to
    for a member retired for good: otherwise its share of the shared subscription keeps
    being queued for it (and lost to the others) until the 7-day expiry."""
    c = Client(BrokerUrl.parse(broker_url), client_id=client_id, clean_start=True)
    c.connect()
    c.close()


def missing_samples(db_url: str, sim: simulate.Simulator, timeout: float) -> int:
    """Wait until every sample the fleet sent is stored (or ``timeout``); how many are not."""
    db = registry.open_registry(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            counts = registry.seq_counts(db)
            missing = int(sum(h.seq - counts.get(h.id, (0, 0, 0))[0] for h in sim.hubs))
            if missing <= 0 or time.monotonic() > deadline:
                return missing
            time.sleep(0.5)
    finally:
        db.close()


def main() -> None:
    p = argparse.ArgumentParser(description="one consumer process of the ingest benchmarks")
    p.add_argument("--consumer", choices=["bare", "controller"], required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--shared", action="store_true")
    p.add_argument("--prime", action="store_true")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch second to connect at")
    p.add_argument("--idle-s", type=float, default=1.0, help="done after idle this long")
    run_consumer(p.parse_args())


if __name__ == "__main__":
    main()
