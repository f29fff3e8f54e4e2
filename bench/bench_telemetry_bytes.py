"""Bytes a hub sends for telemetry, MQTT and TCP/IP overhead included, per month at 60 s.

    .venv/bin/python bench/bench_telemetry_bytes.py

The agent's own socket is read with ``ss -ti`` (kernel counters: ``bytes_sent`` is TCP
payload, ``segs_out`` every segment sent, pure ACKs included); each segment adds 52 bytes
of IPv4 + TCP header with timestamps. Samples are sent every second here (a sample at 60 s
costs the same on the wire: one PUBLISH segment and one pure ACK for the PUBACK, and the
keepalive is kept above the interval so no PINGREQ is needed), then extrapolated to
43,200 samples a month. Baseline in the same run: a straightforward paho publisher
sending the same metrics as readable JSON (full key names) with QoS 1, one by one.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_agent.config import validate_config  # noqa: E402
from hub_agent.telemetry.health import AgentStats, ProbeResult  # noqa: E402
from hub_agent.telemetry.service import Telemetry  # noqa: E402
from lab.broker import Broker  # noqa: E402

HEADER = 52  # IPv4 20 + TCP 20 + timestamps option 12
N = 15  # samples per measurement (3 groups of 5)
PER_MONTH = 30 * 24 * 60  # samples at 60 s
PROBE_ICMP = 20 + 8 + 16  # one echo with a 16-byte payload (ping -s 16)
AGENT_FULL_EVERY = 5  # hub_agent.daemon.FULL_SAMPLE_EVERY: what a hub runs
HUB = "tg-lome-mairie-01"
STATS = AgentStats(37, 29, 4_812_345_678, 3, 15_432.0, 0.41)


def sock_counters(local_port: int) -> dict[str, int]:
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{local_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {
        k: int(v)
        for k, v in re.findall(r"\b(bytes_sent|segs_out|bytes_received|segs_in):(\d+)", out)
    }
    return {k: found.get(k, 0) for k in ("bytes_sent", "segs_out", "bytes_received", "segs_in")}


def wire(before: dict[str, int], after: dict[str, int]) -> tuple[float, float, float]:
    """(sent bytes per sample incl. headers, segments sent per sample, received per sample)"""
    sent = after["bytes_sent"] - before["bytes_sent"]
    segs = after["segs_out"] - before["segs_out"]
    recv = after["bytes_received"] - before["bytes_received"]
    rsegs = after["segs_in"] - before["segs_in"]
    return (sent + segs * HEADER) / N, segs / N, (recv + rsegs * HEADER) / N


def agent(broker: Broker, workdir: Path, full_every: int = 1) -> tuple[float, float, float]:
    cfg = validate_config(
        {
            "version": 17,
            "hub": {"id": HUB, "kind": "mairie", "name": "Bench"},
            "data_dir": str(workdir / f"agent-{full_every}"),
            "network": {"lan": {"interface": "lo"}, "wan": {"interface": "eth0"}},
            "portal": {"login_methods": ["free"]},
            "mqtt": {"url": broker.url, "username": HUB, "password": "x" * 24},
        }
    )

    async def run() -> tuple[float, float, float]:
        # Samples every 1 s grouped by 5 stand for the default: every 60 s, sent by 5.
        async def probe(host: str) -> ProbeResult:
            # the probe's result travels in the samples (lat, loss); its own ICMP echo is
            # counted apart, below
            return ProbeResult(23.4, 0.0)

        tel = Telemetry(
            cfg,
            interval_s=3600,
            flush_every_s=4.5,
            full_every=full_every,
            probe=probe,
            probe_every_s=3600,
            agent_stats=lambda: STATS,
        )
        await tel.start()
        await tel.link.connected.wait()
        await asyncio.sleep(1.0)  # the connect, state and agent_start are not per-sample costs
        sock: Any = tel.link._client.socket()
        assert sock is not None
        port = sock.getsockname()[1]
        before = sock_counters(port)
        for _ in range(N):
            await tel.sample_once()
            await asyncio.sleep(1.0)
        await asyncio.sleep(5.0)  # the last group goes out
        after = sock_counters(port)
        await tel.stop()
        return wire(before, after)

    return asyncio.run(run())


def sample_payload(workdir: Path) -> bytes:
    """One sample as the agent queues it (read back from a fresh outbox)."""
    from hub_agent.store import open_db
    from hub_agent.telemetry.health import compact_sample, system_stats
    from hub_agent.telemetry.outbox import OUTBOX, Outbox

    box = Outbox(open_db(workdir / "one.db", OUTBOX), HUB, 1 << 20)
    probe = ProbeResult(23.4, 0.0)
    fields = compact_sample(system_stats(workdir, ["lo", "eth0"]), probe, STATS, 17)
    box.put("health", fields)
    return box.after(0, 1)[0].payload


def naive(broker: Broker, payload: dict[str, Any]) -> tuple[float, float, float]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="naive")
    c.username_pw_set(HUB, "x" * 24)
    acked = threading.Semaphore(0)
    c.on_publish = lambda *a: acked.release()
    c.connect(broker.host, broker.port, keepalive=60)
    c.loop_start()
    time.sleep(1.0)
    port = c.socket().getsockname()[1]  # type: ignore[union-attr]
    before = sock_counters(port)
    for i in range(N):
        c.publish(f"relais/hubs/{HUB}/health", json.dumps({**payload, "seq": i}), qos=1)
        acked.acquire(timeout=5)
        time.sleep(0.5)
    after = sock_counters(port)
    c.disconnect()
    c.loop_stop()
    return wire(before, after)


def readable(compact: dict[str, Any]) -> dict[str, Any]:
    names = {
        "cv": "config_version", "up": "uptime_s", "cpu": "cpu_percent", "ld": "load_1min",
        "mem": "memory_percent", "dsk": "disk_percent", "dfr": "disk_free_mb",
        "tmp": "temperature_c", "if": "interfaces", "lat": "latency_ms", "loss": "loss_percent",
        "dev": "devices_connected", "auth": "devices_authorised", "srv": "bytes_served_today",
        "cut": "quota_cutoffs_today", "cache": "cache_used_mb", "hit": "cache_hit_ratio",
    }  # fmt: skip
    return {names.get(k, k): v for k, v in compact.items()}


def mb(per_sample: float) -> float:
    return per_sample * PER_MONTH / 1e6


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-bytes-"))
    with Broker() as broker:
        broker.add_user(HUB, "x" * 24)
        broker.restart()
        ours, segs, recv = agent(broker, work)
        light, lsegs, _ = agent(broker, work, full_every=AGENT_FULL_EVERY)
        payload = sample_payload(work)
        base, bsegs, brecv = naive(broker, readable(json.loads(payload)))
    # one echo per interval in every-sample mode; one per full sample while the broker link
    # is up in the agent's mode (hub_agent/telemetry/service.py, _probe_loop)
    probe_every = PROBE_ICMP * PER_MONTH / 1e6
    probe = probe_every / AGENT_FULL_EVERY
    print(f"one health sample: {len(payload)} bytes of JSON payload")
    print(f"  {payload.decode()}")
    print("bytes sent per sample on the wire (MQTT + TCP/IPv4 headers, PUBACK's ACK included)")
    print(f"  agent (compact JSON, MQTT v5)     {ours:6.0f} B in {segs:.1f} segments"
          f" -> {mb(ours):5.2f} MB/month at 60 s (received {mb(recv):.2f} MB)")  # fmt: skip
    print(f"  baseline (readable JSON, paho)   {base:6.0f} B in {bsegs:.1f} segments"
          f" -> {mb(base):5.2f} MB/month (received {mb(brecv):.2f} MB)")  # fmt: skip
    print(f"  agent as hubs run it (slow fields and probe every {AGENT_FULL_EVERY}th)"
          f" {light:6.0f} B in {lsegs:.1f} segments -> {mb(light):5.2f} MB/month")  # fmt: skip
    print(f"  ratio agent / baseline: {ours / base:.2f}; as run / baseline {light / base:.2f}")
    print(f"  uplink probe, 44-byte ICMP echo: {probe_every:.2f} MB/month at every interval,"
          f" {probe:.2f} MB/month at every {AGENT_FULL_EVERY}th")  # fmt: skip
    for name, per, icmp in (("every sample full", ours, probe_every),
                            ("as hubs run it", light, probe)):  # fmt: skip
        total = mb(per) + icmp
        verdict = "met" if total <= 10 else "MISSED"
        print(f"telemetry sent, {name}: MQTT {mb(per):.2f} + probe {icmp:.2f} ="
              f" {total:.2f} MB/month (target <= 10: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
