"""Controller ingest: sustained load with nothing lost, then capacity against baselines.

    .venv/bin/python bench/bench_ingest.py [--hubs 2000] [--seconds 15] [--backlog 60000]

1. Sustained: the fleet simulator (2,000 hubs at 1 health sample/s, with outages and
   store-and-forward drains) runs against a real Mosquitto while one controller process
   ingests; afterwards every hub's seq must be contiguous in the registry (0 lost).
2. Capacity, all in this run against the same broker: a backlog of health messages is
   queued for a consumer's persistent session, then the consumer starts and drains it.
   Consumers: a bare paho subscriber (the baseline: receives and acks, stores nothing),
   one controller process (parse, decide, commit, ack after commit), and two controller
   processes sharing the load through an MQTT 5 shared subscription.
   Ratios: controller / bare (target >= 0.9) and two controllers / one (target >= 1.6;
   on this 2-core box the broker and both controllers share the two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_agent.mqtt.client import Client  # noqa: E402
from hub_agent.mqtt.core import BrokerUrl  # noqa: E402
from lab.broker import Broker  # noqa: E402
from provisioning import registry, simulate, topics  # noqa: E402

PY = sys.executable


class BenchBroker(Broker):
    """The test broker without disk persistence (its autosave would dominate a backlog)."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        text = conf.read_text().replace("persistence true", "persistence false")
        conf.write_text(text.replace("max_queued_messages 100000", "max_queued_messages 0"))
        return conf


# --- consumer processes (this file re-run with --consumer) ------------------------------


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
    cmd += ["--idle-s", str(IDLE_S[0])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def result(p: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 0, f"consumer failed: {out}"
    data: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return data


# --- phases ----------------------------------------------------------------------------


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


BROKER_PID = [0]
IDLE_S = [1.0]  # a consumer is done once nothing new came for this long


def broker_cpu() -> float:
    t = psutil.Process(BROKER_PID[0]).cpu_times()
    return float(t.user + t.system)


CONSUMERS = {  # name -> (kind, client ids, shared)
    "bare-paho": ("bare", ["bench-bare"], False),
    "controller-x1": ("controller", ["bench-ctl"], False),
    "controller-x2-shared": ("controller", ["bench-sh-a", "bench-sh-b"], True),
}


def drain(url: str, name: str, db: Path, backlog: int) -> tuple[float, float]:
    kind, ids, shared = CONSUMERS[name]
    # every process is started, imported and ready before any connects: no start-up skew
    start_at = time.time() + 1.5
    runs = [consumer(url, kind, cid, db, shared, False, start_at) for cid in ids]
    broker0 = broker_cpu()
    res = [result(p) for p in runs]
    broker_s = broker_cpu() - broker0  # the broker is idle before and after the drain
    got = sum(int(r["count"]) for r in res)
    first = min(r["first"] for r in res if r["count"])
    last = max(r["last"] for r in res if r["count"])
    rate = got / max(last - first, 1e-6)
    shares = "/".join(
        f"{int(r['count'])} in {r['last'] - r['first']:.2f}s@+{r['first'] - first:.2f}" for r in res
    )
    cpu = sum(float(r["cpu"]) for r in res)
    per_cpu = got / max(cpu, 1e-6)
    print(
        f"  {name:<21} {got:>7} msgs in {last - first:5.2f} s = {rate:7.0f} msg/s;"
        f" {per_cpu:7.0f} msg per CPU-s; consumers used {cpu / (last - first):.2f} cores,"
        f" broker {broker_s / (last - first):.2f} ({shares})"
    )
    if got < backlog:
        print(f"  !! {name}: received {got} of {backlog}")
    if kind == "controller":
        waits = "/".join(f"{int(r['lock_waits'])}" for r in res)
        batches = "/".join(f"{int(r['batches'])}" for r in res)
        print(f"  {'':<21} commits {batches}, write-lock retries {waits}")
    return rate, per_cpu


def capacity(
    url: str,
    hubs: list[registry.HubRecord],
    backlog: int,
    seq0: dict[str, int],
    work: Path,
    rounds: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Best of ``rounds``: each round queues one backlog for every consumer's session (one
    copy each; the shared pair splits theirs), then drains them one after the other."""
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    for n in range(rounds):
        dbs = {}
        for name, (kind, ids, shared) in CONSUMERS.items():
            dbs[name] = work / f"cap-{name}-{n}.db"
            registry.register_many(registry.open_registry(dbs[name]), hubs)
            for p in [consumer(url, kind, cid, dbs[name], shared, prime=True) for cid in ids]:
                result(p)
        publish_backlog(url, hubs, backlog, seq0)
        time.sleep(0.5)
        print(f" round {n + 1}:")
        for name in CONSUMERS:
            rate, per_cpu = drain(url, name, dbs[name], backlog)
            best[name] = max(best.get(name, 0.0), rate)
            best_cpu[name] = max(best_cpu.get(name, 0.0), per_cpu)
            ROUNDS.setdefault(name, []).append((rate, per_cpu))
    return best, best_cpu


ROUNDS: dict[str, list[tuple[float, float]]] = {}


def median_ratio(a: str, b: str, which: int) -> float:
    """Median over rounds of the ratio measured within each round (same conditions)."""
    return statistics.median(x[which] / y[which] for x, y in zip(ROUNDS[a], ROUNDS[b], strict=True))


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
        ctl = consumer(url, "controller", client_id, db_url, False, prime=False)
        sim = simulate.Simulator(BrokerUrl.parse(url), hubs, rate=1.0, outage_pct=20)
        sim.start()
        t0 = time.monotonic()
        sim.run(seconds)
        sim.finish()
        sim.close()
        elapsed = time.monotonic() - t0
        stored = int(result(ctl)["count"])
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
        f" lost {lost}, hubs not contiguous {bad}, gaps recorded {gaps}"
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
    p = argparse.ArgumentParser()
    p.add_argument("--hubs", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--backlog", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--consumer", choices=["bare", "controller"])
    p.add_argument("--url")
    p.add_argument("--client-id")
    p.add_argument("--db")
    p.add_argument("--shared", action="store_true")
    p.add_argument("--prime", action="store_true")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch second to connect at")
    p.add_argument("--idle-s", type=float, default=1.0, help="consumer: done after idle this long")
    args = p.parse_args()
    if args.consumer:
        run_consumer(args)
        return

    print(f"bench_ingest: {os.cpu_count()} cores")
    hubs = simulate.fleet_ids(args.hubs)
    with tempfile.TemporaryDirectory(prefix="relais-bench-") as tmp, BenchBroker() as broker:
        assert broker.proc is not None
        BROKER_PID[0] = broker.proc.pid
        work = Path(tmp)
        print("sustained:")
        seq0 = sustained(
            broker.url, str(work / "sustained.db"), hubs, args.seconds, "bench-sustained"
        ).seqs
        print(
            f"capacity: drain a backlog of {args.backlog} health msgs queued for the session"
            " (+ the hubs' retained states)"
        )
        best, best_cpu = capacity(broker.url, hubs, args.backlog, seq0, work, args.rounds)
        bare, one, two = (best[k] for k in CONSUMERS)
        print(
            f"best of {args.rounds}: bare {bare:.0f}, controller x1 {one:.0f}, "
            f"x2 shared {two:.0f} msg/s"
        )
        print(f"ratio controller / bare paho: {one / bare:.2f} (target >= 0.9)")
        cpu_ratio = best_cpu["controller-x1"] / best_cpu["bare-paho"]
        print(
            "median of per-round ratios: controller/bare"
            f" {median_ratio('controller-x1', 'bare-paho', 0):.2f} (msg/s),"
            f" {median_ratio('controller-x1', 'bare-paho', 1):.2f} (msg per CPU-s);"
            f" x2/x1 {median_ratio('controller-x2-shared', 'controller-x1', 0):.2f}"
        )
        print(
            f"ratio controller / bare paho in messages per CPU-second: {cpu_ratio:.2f}"
            " (the same comparison, insensitive to other load on the machine)"
        )
        print(
            f"ratio 2 controllers / 1:      {two / one:.2f} (target >= 1.6; 2 cores shared "
            "with the broker)"
        )


if __name__ == "__main__":
    main()
