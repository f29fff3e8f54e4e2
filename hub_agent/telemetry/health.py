"""One health sample: the box (psutil), its interfaces (pyroute2), the uplink, the agent.

Uplink bytes are paid for, so the sample is compact JSON with short keys. Fields that are
unknown (no temperature sensor, probe not run yet, no agent stats) are left out rather
than sent as null. The outbox adds ``hub_id``, ``seq`` and ``ts`` (epoch seconds).

=========  ======================================================================
key        meaning
=========  ======================================================================
``cv``     config version running
``up``     uptime, seconds
``cpu``    CPU use since the previous sample, %
``ld``     1-minute load average
``mem``    memory in use, %
``dsk``    data partition (``data_dir``) in use, %
``dfr``    data partition free, MB
``tmp``    hottest temperature sensor, °C (absent when the board has none)
``if``     ``{ifname: [rx_bytes, tx_bytes]}`` for the LAN and WAN interfaces, with
           ``rx_errors, tx_errors`` appended only when either is non-zero
``lat``    uplink round-trip time to ``network.wan.probe_host``, ms (absent: no reply)
``loss``   uplink probe loss over the last 10 probes (one echo each), %
``dev``    devices connected           ``auth``  devices authorised
``srv``    bytes served to the community today
``cut``    quota cut-offs today
``cache``  content cache in use, MB    ``hit``   cache hit ratio today (0..1)
``thin``   samples the outbox dropped over its disk budget so far (their seqs never
           come; absent while none was) — added by ``Telemetry``
=========  ======================================================================
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024
# Counters and levels that a fleet view needs at minutes' resolution, not every sample.
# Sent on every full_every-th sample only (light samples carry cpu, mem and clients). The
# uplink probe runs at the same pace while the broker link is up, so lat/loss go with them.
SLOW_FIELDS = frozenset(
    {"cv", "up", "ld", "dsk", "dfr", "tmp", "if", "lat", "loss", "srv", "cut", "cache", "hit"}
)


@dataclass(frozen=True)
class AgentStats:
    """What only the agent knows; supplied by a callback from the integrator."""

    devices_connected: int | None = None
    devices_authorised: int | None = None
    bytes_served_today: int | None = None
    quota_cutoffs_today: int | None = None
    cache_used_mb: float | None = None
    cache_hit_ratio: float | None = None


@dataclass(frozen=True)
class ProbeResult:
    latency_ms: float | None  # None: no reply at all
    loss_pct: float

    @property
    def ok(self) -> bool:
        return self.latency_ms is not None


@dataclass(frozen=True)
class IfStats:
    rx_bytes: int
    tx_bytes: int
    rx_errors: int = 0
    tx_errors: int = 0


@dataclass(frozen=True)
class SystemStats:
    uptime_s: float
    cpu_pct: float
    load1: float
    mem_pct: float
    disk_pct: float
    disk_free_mb: float
    temp_c: float | None
    interfaces: dict[str, IfStats]


def compact_sample(
    system: SystemStats,
    probe: ProbeResult | None,
    agent: AgentStats | None,
    config_version: int | None,
    full: bool = True,
) -> dict[str, Any]:
    """The wire form of a sample (pure: tested without a box).

    ``full=False`` leaves out the slowly-moving fields (``SLOW_FIELDS``): the light
    sample of ``Telemetry(full_every=N)``, which sends them on every N-th sample only."""
    out: dict[str, Any] = {
        "cv": config_version,
        "up": int(system.uptime_s),
        "cpu": round(system.cpu_pct),
        "ld": round(system.load1, 2),
        "mem": round(system.mem_pct),
        "dsk": round(system.disk_pct),
        "dfr": int(system.disk_free_mb),
        "tmp": None if system.temp_c is None else round(system.temp_c),
    }
    ifs: dict[str, list[int]] = {}
    for name, st in system.interfaces.items():
        row = [st.rx_bytes, st.tx_bytes]
        if st.rx_errors or st.tx_errors:
            row += [st.rx_errors, st.tx_errors]
        ifs[name] = row
    if ifs:
        out["if"] = ifs
    if probe is not None:
        out["lat"] = None if probe.latency_ms is None else round(probe.latency_ms, 1)
        out["loss"] = round(probe.loss_pct)
    if agent is not None:
        out["dev"] = agent.devices_connected
        out["auth"] = agent.devices_authorised
        out["srv"] = agent.bytes_served_today
        out["cut"] = agent.quota_cutoffs_today
        out["cache"] = None if agent.cache_used_mb is None else round(agent.cache_used_mb)
        out["hit"] = None if agent.cache_hit_ratio is None else round(agent.cache_hit_ratio, 2)
    return {k: v for k, v in out.items() if v is not None and (full or k not in SLOW_FIELDS)}


# -- the box ------------------------------------------------------------------------------


def _existing(path: Path) -> Path:
    # data_dir may not exist yet on a fresh box: measure the partition it will live on.
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def interface_stats(names: Iterable[str]) -> dict[str, IfStats]:
    """Byte and error counters via netlink (pyroute2); psutil if netlink is unavailable."""
    wanted = list(dict.fromkeys(names))
    out: dict[str, IfStats] = {}
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for link in ipr.get_links():
                name = link.get("IFLA_IFNAME")
                st = link.get("IFLA_STATS64")
                if name in wanted and st is not None:
                    out[name] = IfStats(
                        int(st["rx_bytes"]),
                        int(st["tx_bytes"]),
                        int(st["rx_errors"]),
                        int(st["tx_errors"]),
                    )
    except Exception:  # netlink refused (container, permissions): fall back to psutil
        counters = psutil.net_io_counters(pernic=True)
        for name in wanted:
            c = counters.get(name)
            if c is not None:
                out[name] = IfStats(c.bytes_recv, c.bytes_sent, c.errin, c.errout)
    return {n: out[n] for n in wanted if n in out}


def hottest_temperature() -> float | None:
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        sensors = read()
    except (OSError, RuntimeError):
        return None
    values = [t.current for group in sensors.values() for t in group if t.current]
    return max(values) if values else None


def system_stats(data_dir: Path, interfaces: Iterable[str]) -> SystemStats:
    """Blocking (a few ms of /proc and netlink reads): call through ``asyncio.to_thread``."""
    disk = psutil.disk_usage(str(_existing(data_dir)))
    return SystemStats(
        uptime_s=time.time() - psutil.boot_time(),
        cpu_pct=psutil.cpu_percent(interval=None),
        load1=os.getloadavg()[0],
        mem_pct=psutil.virtual_memory().percent,
        disk_pct=disk.percent,
        disk_free_mb=disk.free / MB,
        temp_c=hottest_temperature(),
        interfaces=interface_stats(interfaces),
    )


# -- the uplink ---------------------------------------------------------------------------

_PING_LOSS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


def parse_ping(text: str) -> ProbeResult:
    """Summary of ``ping -q`` (iputils or busybox): average RTT and loss."""
    m = _PING_LOSS.search(text)
    if not m or int(m.group(1)) == 0:
        return ProbeResult(None, 100.0)
    sent, got = int(m.group(1)), int(m.group(2))
    rtt = _PING_RTT.search(text)
    latency = float(rtt.group(1)) if rtt and got else None
    return ProbeResult(latency, 100.0 * (sent - got) / sent)


async def ping_probe(host: str, count: int = 1, timeout_s: float = 1.0) -> ProbeResult:
    """ICMP probe through the system ``ping`` (no raw socket in the agent)."""
    exe = shutil.which("ping")
    if exe is None:
        return await tcp_probe(host, 53, count, timeout_s)
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-n",
        "-q",
        "-c",
        str(count),
        "-i",
        "0.2",
        "-s",
        "16",  # 44-byte packets: enough for the RTT timestamp, cheap on the uplink
        "-W",
        str(max(1, round(timeout_s))),
        host,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), count * 0.2 + timeout_s + 2)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return ProbeResult(None, 100.0)
    return parse_ping(out.decode(errors="replace"))


async def tcp_probe(host: str, port: int, count: int = 1, timeout_s: float = 1.0) -> ProbeResult:
    """RTT of a TCP handshake; a refusal (RST) still proves the path and times it."""
    rtts: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
            writer.close()
            rtts.append((time.perf_counter() - start) * 1000)
        except ConnectionRefusedError:
            rtts.append((time.perf_counter() - start) * 1000)
        except (OSError, TimeoutError, socket.gaierror):
            pass
    if not rtts:
        return ProbeResult(None, 100.0)
    return ProbeResult(sum(rtts) / len(rtts), 100.0 * (count - len(rtts)) / count)
