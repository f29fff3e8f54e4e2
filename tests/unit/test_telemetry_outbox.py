"""The outbox's pure decisions (thinning, drain rate) and its SQLite behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_agent.store import open_db
from hub_agent.telemetry.health import AgentStats, IfStats, ProbeResult, SystemStats, compact_sample
from hub_agent.telemetry.outbox import (
    OUTBOX,
    ROW_OVERHEAD,
    Outbox,
    RowSize,
    TokenBucket,
    days_that_fit,
    encode,
    plan_thinning,
)


def rows(kinds: str, size: int = 100) -> list[RowSize]:
    """'hhehh' -> rows 1..5, h = health, e = event."""
    return [RowSize(i + 1, "health" if k == "h" else "event", size) for i, k in enumerate(kinds)]


def test_under_budget_nothing_is_thinned() -> None:
    assert plan_thinning(rows("hhhh"), 400) == []


def test_thinning_drops_every_other_oldest_health_sample_first() -> None:
    # 10 health rows of 100 bytes, budget 800: two rows must go, the 2nd and 4th oldest.
    assert plan_thinning(rows("h" * 10), 800) == [2, 4]


def test_events_are_never_thinned() -> None:
    plan = plan_thinning(rows("eheheheh"), 300)
    kinds = {r.id: r.kind for r in rows("eheheheh")}
    assert plan and all(kinds[i] == "health" for i in plan)
    # Even far over budget with only events left, they stay.
    assert plan_thinning(rows("eeee"), 10) == []


def test_repeated_passes_make_old_history_sparser_not_new() -> None:
    plan = plan_thinning(rows("h" * 16), 500)
    kept = [i for i in range(1, 17) if i not in plan]
    assert sum(100 for _ in kept) <= 500
    # The survivors are spread over the whole period: the oldest and the newest survive.
    assert (1 in kept and 16 in kept) or 15 in kept


def test_token_bucket_bounds_the_drain_rate() -> None:
    b = TokenBucket(rate=10, burst=1)
    waits = [b.delay(0.0) for _ in range(5)]
    # The first goes now, then one every 1/rate seconds.
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert TokenBucket(None).delay(0.0) == 0.0


def test_token_bucket_refills_with_time() -> None:
    b = TokenBucket(rate=100, burst=5)
    for _ in range(5):
        assert b.delay(0.0) == 0.0
    assert b.delay(0.0) > 0
    assert b.delay(1.0) == 0.0  # a second later the bucket is full again


def realistic_sample() -> bytes:
    system = SystemStats(
        uptime_s=9_876_543,
        cpu_pct=37.4,
        load1=1.27,
        mem_pct=63.1,
        disk_pct=71.8,
        disk_free_mb=12_345,
        temp_c=58.2,
        interfaces={
            "wan0": IfStats(123_456_789_012, 23_456_789_012, 12, 3),
            "lan0": IfStats(23_456_789_012, 123_456_789_012, 0, 0),
        },
    )
    fields = compact_sample(
        system,
        ProbeResult(142.7, 33.3),
        AgentStats(48, 31, 9_876_543_210, 7, 15_432.0, 0.43),
        12345,
    )
    return encode(
        {"hub_id": "tg-lome-mairie-01", "seq": 987_654, "ts": 1_790_000_000.123, **fields}
    )


def test_seven_days_at_the_default_interval_fit_the_default_budget() -> None:
    sample = realistic_sample()
    assert days_that_fit(32 * 1024 * 1024, len(sample), 60) >= 7


def test_seq_is_per_kind_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    box = Outbox(open_db(path, OUTBOX), "hub-a", 1 << 20)
    assert [box.put("health", {"cpu": i}) for i in range(3)] == [1, 2, 3]
    assert box.put("event", {"type": "agent_start"}) == 1
    box.ack([r.id for r in box.after(0, 10)])  # everything acknowledged and deleted
    box.db.conn.close()
    box = Outbox(open_db(path, OUTBOX), "hub-a", 1 << 20)
    assert box.put("health", {"cpu": 9}) == 4, "seq must continue after a restart"
    (row,) = box.after(0, 10)
    body = json.loads(row.payload)
    assert body["hub_id"] == "hub-a" and body["seq"] == 4 and body["cpu"] == 9


def test_drain_order_is_oldest_first_and_ack_deletes(tmp_path: Path) -> None:
    box = Outbox(open_db(tmp_path / "hub.db", OUTBOX), "hub-a", 1 << 20)
    for i in range(5):
        box.put("health" if i != 2 else "event", {"i": i})
    first = box.after(0, 3)
    assert [json.loads(r.payload)["i"] for r in first] == [0, 1, 2]
    assert [r.kind for r in first] == ["health", "health", "event"]
    box.ack([first[0].id, first[1].id])
    assert box.depth() == {"health": 2, "event": 1}
    assert [json.loads(r.payload)["i"] for r in box.after(0, 10)] == [2, 3, 4]


def test_budget_thins_old_health_and_keeps_events(tmp_path: Path) -> None:
    box = Outbox(open_db(tmp_path / "hub.db", OUTBOX), "hub-a", 40 * (ROW_OVERHEAD + 60))
    box.put("event", {"type": "uplink_lost"})
    for i in range(200):
        box.put("health", {"i": i, "pad": "x" * 20})
    assert box.thinned > 0
    assert box.bytes <= box.budget_bytes
    assert box.depth()["event"] == 1
    kept = [json.loads(r.payload)["i"] for r in box.after(0, 1000) if r.kind == "health"]
    assert kept[-1] == 199, "the newest sample is never thinned"
    assert kept == sorted(kept)
    # Recent history is denser than old history.
    assert len([i for i in kept if i >= 150]) > len([i for i in kept if i < 50])
    measured = box.db.execute(
        f"SELECT sum(length(payload)) + count(*) * {ROW_OVERHEAD} FROM outbox"
    ).fetchone()[0]
    assert measured == box.bytes, "the running byte count drifted from the table"
    thinned = box.thinned
    assert thinned == 200 - len(kept)
    reopened = Outbox(open_db(tmp_path / "hub.db", OUTBOX), "hub-a", box.budget_bytes)
    assert reopened.thinned == thinned, "the thinned total survives a restart"
