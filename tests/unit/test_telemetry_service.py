"""The drain's coalescing rule: fresh health waits for company, events and backlogs go."""

from __future__ import annotations

import time
from pathlib import Path

from hub_agent.config import validate_config
from hub_agent.telemetry.outbox import Queued
from hub_agent.telemetry.service import COALESCE_MAX, Telemetry


def tel(tmp_path: Path, **kw: float) -> Telemetry:
    cfg = validate_config(
        {
            "version": 1,
            "hub": {"id": "hub-a", "kind": "mairie", "name": "A"},
            "data_dir": str(tmp_path),
            "portal": {"login_methods": ["free"]},
        }
    )
    return Telemetry(cfg, probe=None, **kw)  # type: ignore[arg-type]


def q(kind: str, age_s: float, i: int = 1) -> Queued:
    return Queued(i, kind, i, time.time() - age_s, b"{}")  # type: ignore[arg-type]


def test_default_groups_five_samples_at_the_default_interval(tmp_path: Path) -> None:
    t = tel(tmp_path)
    assert t.interval_s == 60 and t.flush_every_s == 270
    assert 260 < t._hold_for([q("health", 0)]) <= 270
    assert t._hold_for([q("health", 300)]) == 0, "the oldest waited long enough"


def test_events_and_backlogs_are_not_held(tmp_path: Path) -> None:
    t = tel(tmp_path)
    assert t._hold_for([q("health", 0), q("event", 0, 2)]) == 0
    assert t._hold_for([q("health", 0, i) for i in range(COALESCE_MAX)]) == 0


def test_flush_every_zero_sends_each_sample_at_once(tmp_path: Path) -> None:
    assert tel(tmp_path, flush_every_s=0)._hold_for([q("health", 0)]) == 0


def test_an_applied_config_changes_interval_budget_rate_and_probe_target(tmp_path: Path) -> None:
    t = tel(tmp_path)
    new = t.config.model_copy(
        update={
            "mqtt": t.config.mqtt.model_copy(
                update={"telemetry_interval_s": 120, "outbox_budget_mb": 8, "drain_rate_per_s": 5}
            )
        }
    )
    t.reconfigure(new)
    assert t.interval_s == 120 and t.flush_every_s == 300  # capped at 5 min
    assert t.outbox.budget_bytes == 8 * 1024 * 1024 and t.bucket.rate == 5
    assert t.config is new


def test_uplink_probe_runs_every_fifth_interval_while_the_broker_link_is_up(
    tmp_path: Path,
) -> None:
    import asyncio

    from hub_agent.telemetry.health import ProbeResult

    cfg = tel(tmp_path).config
    calls: list[bool] = []

    async def run() -> None:
        async def probe(host: str) -> ProbeResult:
            calls.append(t.link.connected.is_set())
            return ProbeResult(12.0, 0.0)

        t = Telemetry(cfg, probe=probe, probe_every_s=0.01, full_every=5)
        t.link.connected.set()  # stands for a live broker link
        task = asyncio.create_task(t._probe_loop())
        await asyncio.sleep(0.5)
        up = len(calls)
        t.link.connected.clear()  # the link drops: probe at every interval
        await asyncio.sleep(0.5)
        task.cancel()
        down = len(calls) - up
        assert up >= 2 and down >= 3 * up, (up, down)
        assert t.last_probe is not None and t.last_probe.latency_ms == 12.0

    asyncio.run(run())
