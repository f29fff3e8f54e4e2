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
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_fleet import (  # noqa: E402
    BenchBroker,
    consumer,
    publish_backlog,
    result,
    sustained,
)

from provisioning import registry, simulate  # noqa: E402

BROKER_PID = [0]


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hubs", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--backlog", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
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
