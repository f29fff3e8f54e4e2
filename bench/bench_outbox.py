"""Outbox drain throughput and the agent's idle cost, against a local Mosquitto.

    .venv/bin/python bench/bench_outbox.py

1. Drain 10,000 queued samples (rate bound off) through ``Telemetry``: msgs/s from
   "connected" to "outbox empty" (every row PUBACKed and deleted), against a bare paho
   QoS 1 publisher with paho's defaults (20 in flight, Nagle on) and the same publisher
   tuned (1000 in flight, TCP_NODELAY) in the same run, on a broker with
   ``set_tcp_nodelay true`` and ``max_inflight_messages 1000`` (lab.broker) and on
   one with Mosquitto's defaults. Target >= 1,000 msgs/s.
2. The agent idle: ``python -m hub_agent.telemetry`` at the default 60 s interval, CPU and
   RSS over 20 s (psutil), against an idle bare paho client process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_agent.config import validate_config  # noqa: E402
from hub_agent.store import transaction  # noqa: E402
from hub_agent.telemetry.service import Telemetry  # noqa: E402
from lab.broker import Broker  # noqa: E402

N = 10_000
SAMPLE = {
    "cv": 12, "up": 864000, "cpu": 12, "ld": 0.42, "mem": 43, "dsk": 61, "dfr": 12345,
    "if": {"wan0": [123456789012, 23456789012], "lan0": [23456789012, 123456789012]},
    "lat": 42.1, "loss": 0, "dev": 12, "auth": 9, "srv": 123456789, "cut": 2, "cache": 1234,
    "hit": 0.45,
}  # fmt: skip


class DefaultBroker(Broker):
    """Mosquitto with its own defaults (no nodelay, 20 in flight)."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        lines = [
            ln
            for ln in conf.read_text().splitlines()
            if not ln.startswith(("set_tcp_nodelay", "max_inflight_messages"))
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf


def bare_paho(broker: Broker, tuned: bool, n: int = N) -> float:
    payload = json.dumps({"hub_id": "bench", "seq": 0, "ts": 0.0, **SAMPLE})
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{tuned}")
    done = threading.Event()
    acked = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1
        if acked[0] == n:
            done.set()

    def on_socket_open(client: mqtt.Client, userdata: object, sock: Any) -> None:
        if tuned:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    c.on_publish = on_publish
    c.on_socket_open = on_socket_open
    if tuned:
        c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    t0 = time.perf_counter()
    for _ in range(n):
        c.publish("relais/hubs/bench/health", payload, qos=1)
    done.wait(300)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return n / dt


def agent_drain(broker: Broker, workdir: Path) -> float:
    cfg = validate_config(
        {
            "version": 1,
            "hub": {"id": "bench", "kind": "mairie", "name": "Bench"},
            "data_dir": str(workdir / "drain"),
            "portal": {"login_methods": ["free"]},
            "mqtt": {"url": broker.url, "outbox_budget_mb": 256},
        }
    )

    async def run() -> float:
        tel = Telemetry(cfg, interval_s=3600, drain_rate_per_s=None, probe=None)
        with transaction(tel.db):
            for _ in range(N):
                tel.outbox.put("health", SAMPLE)
        await tel.link.start()  # connect first: time the drain, not the TCP handshake
        await tel.link.connected.wait()
        await tel.link.stop()
        t0 = time.perf_counter()
        await tel.start()
        while tel.outbox.depth()["health"] > 0:
            await asyncio.sleep(0.005)
        dt = time.perf_counter() - t0
        await tel.stop()
        return N / dt

    return asyncio.run(run())


def idle_cost(broker: Broker, workdir: Path, seconds: float = 20) -> list[tuple[float, float]]:
    conf = workdir / "idle.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "hub": {"id": "idle", "kind": "mairie", "name": "Idle"},
                "data_dir": str(workdir / "idle"),
                "network": {"wan": {"probe_host": "127.0.0.1", "interface": "lo"}},
                "portal": {"login_methods": ["free"]},
                "mqtt": {"url": broker.url},
            }
        )
    )
    bare_src = (
        "import paho.mqtt.client as m, sys, time\n"
        "from paho.mqtt.enums import CallbackAPIVersion as V\n"
        "c = m.Client(V.VERSION2, client_id='idle-bare')\n"
        "c.connect('127.0.0.1', int(sys.argv[1]))\n"
        "c.loop_start(); time.sleep(3600)\n"
    )
    procs = {
        "agent": subprocess.Popen(
            [sys.executable, "-m", "hub_agent.telemetry", "--config", str(conf)], cwd=ROOT
        ),
        "bare paho": subprocess.Popen([sys.executable, "-c", bare_src, str(broker.port)]),
    }
    time.sleep(4)  # start-up (imports, first sample) is not idle
    ps = {k: psutil.Process(p.pid) for k, p in procs.items()}
    t0 = {k: sum(p.cpu_times()[:2]) for k, p in ps.items()}
    time.sleep(seconds)
    out = []
    for k in ("agent", "bare paho"):
        cpu = (sum(ps[k].cpu_times()[:2]) - t0[k]) / seconds * 100
        rss = ps[k].memory_info().rss / 1e6
        out.append((cpu, rss))
    for p in procs.values():
        p.terminate()
        p.wait(10)
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    with Broker() as tuned_broker:
        base_default = bare_paho(tuned_broker, tuned=False)
        base_tuned = bare_paho(tuned_broker, tuned=True)
        ours = agent_drain(tuned_broker, work)
        (a_cpu, a_rss), (b_cpu, b_rss) = idle_cost(tuned_broker, work)
    with DefaultBroker() as plain_broker:
        plain_default = bare_paho(plain_broker, tuned=False, n=2000)
        plain_tuned = bare_paho(plain_broker, tuned=True, n=2000)
    print(f"outbox drain, {N} samples, QoS 1, rate bound off (broker: nodelay, 1000 in flight)")
    print(f"  bare paho, paho defaults (20 in flight, Nagle)   {base_default:8.0f} msgs/s")
    print(f"  bare paho, 1000 in flight + TCP_NODELAY          {base_tuned:8.0f} msgs/s")
    print(f"  agent outbox drain (SQLite read + delete on ack) {ours:8.0f} msgs/s")
    print(f"  ratio agent / bare paho defaults: {ours / base_default:.1f}x;"
          f" agent / tuned bare paho: {ours / base_tuned:.2f}x;"
          f" target >= 1000 msgs/s: {'met' if ours >= 1000 else 'MISSED'}")  # fmt: skip
    print("Mosquitto with its defaults (no set_tcp_nodelay, 20 in flight), 2000 messages")
    print(
        f"  bare paho defaults {plain_default:8.0f} msgs/s; tuned client {plain_tuned:8.0f} msgs/s"
    )
    print("idle over 20 s at the default 60 s interval")
    print(f"  agent (telemetry loop)  CPU {a_cpu:6.3f}%  RSS {a_rss:6.1f} MB")
    print(f"  bare paho client        CPU {b_cpu:6.3f}%  RSS {b_rss:6.1f} MB")
    tick = 100 / 100 / 20  # one 10 ms clock tick over 20 s, in %: the resolution
    print(f"  ratio agent / bare: CPU {a_cpu / max(b_cpu, tick):.1f}x (floor one tick),"
          f" RSS {a_rss / b_rss:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
