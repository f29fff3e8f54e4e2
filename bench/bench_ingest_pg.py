"""The centre on PostgreSQL (issue 17): ingest cost, sustained fleet, failover, in one run.

    .venv/bin/python bench/bench_ingest_pg.py [--hubs 2000] [--seconds 15] [--backlog 30000]

A throwaway PostgreSQL (lab/postgres.py: initdb in a temp dir, fsync off as in the
tests) and a Mosquitto without disk persistence (ingest_fleet.BenchBroker).

1. CPU per message: a backlog of health messages is queued for each consumer's persistent
   session, then each drains it alone: a bare paho subscriber (receives and acks, stores
   nothing), a controller on SQLite, a controller on PostgreSQL. Each reports its own
   process CPU per message (µs); for PostgreSQL also the server's CPU (its backends,
   sampled while the drain runs), which a controller host pays too.
2. Sustained: the simulated fleet (2,000 hubs x 1 sample/s with outages and outbox drains)
   against one controller on PostgreSQL; then every hub's seq must be contiguous (0 lost).
3. Failover: two `hubctl controller run --shared` processes on PostgreSQL under the fleet
   (no outages, so every hub publishes every second); one is killed -9. Measured from the
   kill: when every hub has a sample published after the kill stored ("new samples"), and
   when every hub's stored seq is contiguous again past the kill ("complete"); samples lost
   once the run is drained. Three ways to run the members:
   a. persistent sessions (`--client-id`), the dead member not restarted for a while, then
      restarted: Mosquitto 2.0 keeps queuing the dead member's share of new messages in its
      session (eclipse/mosquitto#2662), so nothing is complete until it comes back;
   b. persistent sessions, restarted at once under the same id (systemd Restart=always);
   c. clean-session members (no `--client-id`): the broker drops the dead member's session
      at once and the survivor gets every new message, but what was in flight to the dead
      member is gone (the hubs' outboxes let go of a sample once the broker acked it).

Benches print; they do not assert timing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ingest_fleet  # noqa: E402

from hub_agent.mqtt.core import BrokerUrl  # noqa: E402
from lab.postgres import PgServer  # noqa: E402
from provisioning import registry, simulate  # noqa: E402

HUBCTL = Path(sys.executable).parent / "hubctl"
TELEMETRY_INTERVAL_S = 60  # the hub config's default telemetry_interval_s
SESSIONS: list[str] = []  # kept sessions of finished phases, ended before the next one


class PgCpu:
    """CPU of the PostgreSQL server's processes while a phase runs (backends that end
    during the phase keep the last value sampled)."""

    def __init__(self, pg: PgServer) -> None:
        pid = int((pg.data / "postmaster.pid").read_text().split()[0])
        self.root = psutil.Process(pid)
        self.seen: dict[int, tuple[float, float]] = {}  # pid -> (first, last)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for p in [self.root, *self.root.children()]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            cpu = float(t.user + t.system)
            first = self.seen.get(p.pid, (cpu, cpu))[0]
            self.seen[p.pid] = (first, cpu)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> PgCpu:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(last - first for first, last in self.seen.values())


# --- 1. CPU per message -------------------------------------------------------------


def cpu_per_message(
    broker_url: str,
    pg: PgServer,
    hubs: list[registry.HubRecord],
    backlog: int,
    seq0: dict[str, int],
    work: Path,
    rounds: int,
) -> dict[str, list[float]]:
    """µs of consumer CPU per message, per round; 'pg-server' is the server's share."""
    out: dict[str, list[float]] = {}
    for n in range(rounds):
        targets = {
            "bare-paho": ("bare", str(work / f"bare-{n}.db")),
            "controller-sqlite": ("controller", str(work / f"sqlite-{n}.db")),
            "controller-pg": ("controller", pg.new_database(f"cap{n}")),
        }
        for name, (kind, db) in targets.items():
            if kind == "controller":
                registry.register_many(registry.open_registry(db), hubs)
            ingest_fleet.result(
                ingest_fleet.consumer(broker_url, kind, f"cpu-{name}", db, False, prime=True)
            )
            SESSIONS.append(f"cpu-{name}")
        ingest_fleet.publish_backlog(broker_url, hubs, backlog, seq0)
        time.sleep(0.5)
        print(f" round {n + 1}:")
        for name, (kind, db) in targets.items():
            start_at = time.time() + 1.5
            p = ingest_fleet.consumer(broker_url, kind, f"cpu-{name}", db, False, False, start_at)
            with PgCpu(pg) as server:
                r = ingest_fleet.result(p)
            got, cpu = int(r["count"]), float(r["cpu"])
            wall = max(r["last"] - r["first"], 1e-6)
            us = cpu / max(got, 1) * 1e6
            out.setdefault(name, []).append(us)
            extra = ""
            if name == "controller-pg":
                server_us = server.seconds / max(got, 1) * 1e6
                out.setdefault("pg-server", []).append(server_us)
                extra = f"; PostgreSQL server {server_us:5.1f} µs/msg"
            lost = "" if got >= backlog else f"  !! received {got} of {backlog}"
            print(
                f"  {name:<18} {got:>6} msgs in {wall:5.2f} s = {got / wall:6.0f} msg/s;"
                f" {us:5.1f} µs CPU/msg ({cpu / wall:.2f} cores){extra}{lost}"
            )
    return out


# --- 3. failover ---------------------------------------------------------------------


class Members:
    def __init__(self, broker_url: str, db_url: str, state: Path) -> None:
        self.env = dict(
            os.environ,
            RELAIS_CENTRAL_DIR=str(state),
            RELAIS_MQTT_URL=broker_url,
            RELAIS_CENTRAL_DB=db_url,
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, client_id: str | None) -> float:
        """Start a member; return when it said it is connected (its start-up time)."""
        t0 = time.monotonic()
        cmd = [str(HUBCTL), "controller", "run", "--http-port", "0", "--shared"]
        if client_id:
            cmd += ["--client-id", client_id]
        p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert p.stderr is not None
        said: list[bytes] = []
        for line in p.stderr:
            if b"controller connected" in line:
                self.procs[name] = p
                threading.Thread(target=p.stderr.read, daemon=True).start()  # keep draining
                return time.monotonic() - t0
            said = [*said[-5:], line]
        p.kill()
        p.wait()
        raise RuntimeError(f"controller {name} did not connect: {b''.join(said).decode()}")

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def close(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            p.wait(timeout=30)


def coverage(db_url: str, snap: dict[str, int]) -> tuple[int, int]:
    """(hubs with a sample newer than the kill stored, hubs also contiguous from 1)."""
    db = registry.open_registry(db_url)
    try:
        rows = db.execute(
            "SELECT hub_id, count(*), max(seq) FROM health GROUP BY hub_id"
        ).fetchall()
    finally:
        db.close()
    new = cont = 0
    for hub_id, n, hi in rows:
        if hi > snap.get(hub_id, 0):
            new += 1
            if n == hi:
                cont += 1
    return new, cont


def failover(
    broker_url: str,
    pg: PgServer,
    hubs: list[registry.HubRecord],
    work: Path,
    mode: str,
    watch_s: float = 12.0,
    dead_for_s: float = 8.0,
) -> dict[str, float]:
    url = pg.new_database(f"fo_{mode}")
    registry.register_many(registry.open_registry(url), hubs)
    members = Members(broker_url, url, work / f"central-{mode}")
    ids = {"a": f"fo-{mode}-a", "b": f"fo-{mode}-b"} if mode != "clean" else {"a": None, "b": None}
    for name, cid in ids.items():
        members.start(name, cid)
    sim = simulate.Simulator(BrokerUrl.parse(broker_url), hubs, rate=1.0, outage_pct=0)
    sim.start()
    runner = threading.Thread(target=sim.run, args=(0,), daemon=True)
    runner.start()
    out: dict[str, float] = {}
    try:
        time.sleep(5)  # steady state: both members ingesting
        snap = {h.id: h.seq for h in sim.hubs}
        t_kill = time.monotonic()
        members.kill("a")
        restart_at = {"persistent-late": dead_for_s, "persistent-systemd": 0.1}.get(mode)
        restarted = False
        t_new = t_full = float("nan")
        while time.monotonic() - t_kill < watch_s + (restart_at or 0):
            now = time.monotonic() - t_kill
            if restart_at is not None and not restarted and now >= restart_at:
                out["restart_s"] = members.start("a", ids["a"])
                restarted = True
                continue
            new, cont = coverage(url, snap)
            if new == len(hubs) and t_new != t_new:
                t_new = now
            if cont == len(hubs) and t_full != t_full:
                t_full = now
                break
            if mode == "persistent-late" and not restarted and now >= dead_for_s - 0.6:
                out["contiguous_while_dead"] = cont
            time.sleep(0.2)
        out["new_s"], out["complete_s"] = t_new, t_full
    finally:
        sim.stop()
        runner.join()
        sim.close()
        try:
            out["lost"] = ingest_fleet.missing_samples(url, sim, timeout=15)
            out["sent"] = sim.stats.health
        finally:
            members.close()
    for cid in ids.values():
        if cid:
            ingest_fleet.end_session(broker_url, cid)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hubs", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--backlog", type=int, default=30_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--idle-s", type=float, default=5.0, help="a drain is over after this long without news"
    )
    p.add_argument(
        "--skip", default="", help="comma list of phases to skip: cpu,sustained,failover"
    )
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    ingest_fleet.IDLE_S[0] = args.idle_s
    hubs = simulate.fleet_ids(args.hubs)
    print(f"bench_ingest_pg: {os.cpu_count()} cores, {args.hubs} hubs")
    with (
        tempfile.TemporaryDirectory(prefix="relais-bench-pg-") as tmp,
        PgServer() as pg,
        ingest_fleet.BenchBroker() as broker,
    ):
        work = Path(tmp)
        seq0 = {h.id: 10_000_000 for h in hubs}  # backlog seqs far from the simulator's
        us: dict[str, list[float]] = {}
        if "cpu" not in skip:
            print(f"1. CPU per message: a backlog of {args.backlog} health msgs per consumer")
            us = cpu_per_message(broker.url, pg, hubs, args.backlog, seq0, work, args.rounds)
        lost = -1
        if "sustained" not in skip:
            print("2. sustained on PostgreSQL")
            url = pg.new_database("sustained")
            lost = ingest_fleet.sustained(
                broker.url, url, hubs, args.seconds, "bench-pg-sustained"
            ).lost
        for cid in SESSIONS:  # else they would queue a copy of every later message
            ingest_fleet.end_session(broker.url, cid)
        fo: dict[str, dict[str, float]] = {}
        if "failover" not in skip:
            print("3. failover: kill -9 of one of two shared controllers on PostgreSQL")
            for mode in ("persistent-late", "persistent-systemd", "clean"):
                r = fo[mode] = failover(broker.url, pg, hubs, work, mode)
                extra = ""
                if "contiguous_while_dead" in r:
                    extra += f"; while dead, {int(r['contiguous_while_dead'])} hubs contiguous"
                if "restart_s" in r:
                    extra += f"; restart took {r['restart_s']:.2f} s"
                print(
                    f"  {mode:<19} new samples of every hub stored after {r['new_s']:.2f} s,"
                    f" complete after {r['complete_s']:.2f} s{extra};"
                    f" lost {int(r['lost'])} of {int(r['sent'])}"
                )
        summary(us, lost, fo)


def summary(us: dict[str, list[float]], lost: int, fo: dict[str, dict[str, float]]) -> None:
    print("summary:")
    if us:
        best = {k: min(v) for k, v in us.items()}
        bare, sq, pgc = best["bare-paho"], best["controller-sqlite"], best["controller-pg"]
        server = best["pg-server"]
        print(
            f"  µs CPU per message (best of rounds): bare paho {bare:.1f}, controller on"
            f" SQLite {sq:.1f}, on PostgreSQL {pgc:.1f} (+ server {server:.1f})"
        )
        print(
            f"  bare / controller, messages per CPU-second: SQLite {bare / sq:.2f},"
            f" PostgreSQL {bare / pgc:.2f} (target >= 0.9)"
        )
        print(
            f"  storage cost over the bare subscriber: SQLite {sq - bare:.1f} µs/sample,"
            f" PostgreSQL {pgc - bare:.1f} µs/sample in the controller,"
            f" {pgc - bare + server:.1f} with the server's backends (target <= 50)"
        )
        for label, cost in (("controller", pgc), ("controller + PostgreSQL", pgc + server)):
            per_core = 1e6 / cost
            print(
                f"  one core of {label}: {per_core:,.0f} samples/s ="
                f" {per_core * TELEMETRY_INTERVAL_S:,.0f} hubs at one sample per"
                f" {TELEMETRY_INTERVAL_S} s"
            )
    if lost >= 0:
        print(f"  sustained fleet on PostgreSQL: lost {lost} (target 0)")
    for mode, r in fo.items():
        print(
            f"  failover {mode}: every hub covered by new samples in {r['new_s']:.1f} s,"
            f" complete in {r['complete_s']:.1f} s, lost {int(r['lost'])} (targets <= 10 s, 0)"
        )
    print(json.dumps({"us": us, "lost": lost, "failover": fo}, default=str))


if __name__ == "__main__":
    main()
