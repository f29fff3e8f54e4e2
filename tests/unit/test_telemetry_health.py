"""The health sample's wire form and the uplink probe's parsing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub_agent.telemetry.health import (
    AgentStats,
    IfStats,
    ProbeResult,
    SystemStats,
    compact_sample,
    parse_ping,
    system_stats,
    tcp_probe,
)

SYSTEM = SystemStats(
    uptime_s=3600.7,
    cpu_pct=12.46,
    load1=0.4234,
    mem_pct=41.5,
    disk_pct=70.2,
    disk_free_mb=2048.9,
    temp_c=None,
    interfaces={"wan0": IfStats(1000, 2000, 0, 0), "lan0": IfStats(5, 6, 1, 0)},
)


def test_compact_sample_uses_short_keys_and_drops_unknowns() -> None:
    s = compact_sample(SYSTEM, None, None, 7)
    assert s == {
        "cv": 7,
        "up": 3600,
        "cpu": 12,
        "ld": 0.42,
        "mem": 42,
        "dsk": 70,
        "dfr": 2048,
        "if": {"wan0": [1000, 2000], "lan0": [5, 6, 1, 0]},
    }


def test_compact_sample_carries_probe_and_agent_fields() -> None:
    s = compact_sample(
        SYSTEM, ProbeResult(None, 100.0), AgentStats(10, 8, 12345, 2, 100.4, 0.456), 3
    )
    assert "lat" not in s and s["loss"] == 100
    assert (s["dev"], s["auth"], s["srv"], s["cut"], s["cache"], s["hit"]) == (
        10,
        8,
        12345,
        2,
        100,
        0.46,
    )


def test_parse_ping_iputils_summary() -> None:
    text = (
        "--- 10.0.0.1 ping statistics ---\n"
        "3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n"
        "rtt min/avg/max/mdev = 20.100/25.500/30.900/5.400 ms\n"
    )
    assert parse_ping(text) == ProbeResult(25.5, 100 * 1 / 3)


def test_parse_ping_busybox_and_total_loss() -> None:
    busy = (
        "3 packets transmitted, 3 packets received, 0% packet loss\n"
        "round-trip min/avg/max = 1.0/2.0/3.0 ms\n"
    )
    assert parse_ping(busy) == ProbeResult(2.0, 0.0)
    lost = "3 packets transmitted, 0 received, 100% packet loss, time 2030ms\n"
    assert parse_ping(lost) == ProbeResult(None, 100.0)
    assert parse_ping("ping: unknown host") == ProbeResult(None, 100.0)


def test_system_stats_reads_this_box(tmp_path: Path) -> None:
    st = system_stats(tmp_path / "not-yet-created", ["lo", "does-not-exist0"])
    assert st.uptime_s > 0 and 0 <= st.mem_pct <= 100 and 0 <= st.disk_pct <= 100
    assert set(st.interfaces) == {"lo"}


def test_tcp_probe_times_a_refused_port_and_reports_loss_when_nothing_answers() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: the kernel answers RST
        ok = asyncio.run(tcp_probe("127.0.0.1", port, count=2, timeout_s=1))
    assert ok.ok and ok.loss_pct == 0


def test_a_light_sample_leaves_out_only_the_slow_fields() -> None:
    agent = AgentStats(10, 8, 12345, 2, 100.4, 0.456)
    full = compact_sample(SYSTEM, ProbeResult(20.0, 0.0), agent, 3)
    light = compact_sample(SYSTEM, ProbeResult(20.0, 0.0), agent, 3, full=False)
    assert set(light) == {"cpu", "mem", "dev", "auth"}  # load, uplink probe: every 5th
    assert {k: full[k] for k in light} == light
