"""Ingest decisions (pure) and the registry writes they turn into (in-memory SQLite)."""

from __future__ import annotations

import json

from provisioning import registry
from provisioning.controller.ingest import Ingestor, advance_seq, parse_ts, state_is_stale
from provisioning.registry import HubRecord


def test_advance_seq_opens_shrinks_and_splits_gaps() -> None:
    assert advance_seq(None, [], 7) == (7, [], True)
    assert advance_seq(7, [], 8) == (8, [], True)
    assert advance_seq(8, [], 12) == (12, [(9, 11)], True)
    assert advance_seq(12, [(9, 11)], 10) == (12, [(9, 9), (11, 11)], True)
    assert advance_seq(12, [(9, 9)], 9) == (12, [], True)
    assert advance_seq(12, [], 5) == (12, [], False)  # duplicate


def test_late_will_of_an_old_session_is_ignored() -> None:
    assert state_is_stale("5", 100.0, "4", 90.0, False)
    assert state_is_stale("5", 100.0, "4", 200.0, False)  # session order wins over clocks
    assert not state_is_stale("5", 100.0, "6", 50.0, True)
    # the will of the current session: its ts is the connect's, older, yet it counts
    assert not state_is_stale("5", 100.0, "5", 90.0, False)
    assert state_is_stale("5", 100.0, "5", 90.0, True)  # an older online: a replay
    assert state_is_stale(None, 100.0, None, 90.0, True)
    assert not state_is_stale(None, 100.0, None, 90.0, False)
    assert not state_is_stale(None, None, None, 1.0, True)


def test_parse_ts() -> None:
    assert parse_ts(12.5, 0) == 12.5
    assert parse_ts("1970-01-01T00:01:00+00:00", 0) == 60
    assert parse_ts("garbage", 3) == 3
    assert parse_ts(True, 3) == 3


def _msg(**kw: object) -> bytes:
    return json.dumps(kw).encode()


def test_ingestor_writes_health_state_gaps_and_reports(central_db_url: str) -> None:
    db = registry.open_registry(central_db_url)
    registry.upsert_hub(db, HubRecord("hub-a", "school", "A"), "fp")
    ing = Ingestor(registry.load_cursors(db), registry.open_gaps(db))
    t = "relais/hubs/hub-a/"
    ing.add(t + "state", _msg(online=True, ts=100, session=3, agent_version="1.0"), now=100)
    for seq in (1, 2, 5):
        ing.add(t + "health", _msg(hub_id="hub-a", seq=seq, ts=100 + seq, cpu=10 * seq), now=110)
    ing.add(t + "health", _msg(hub_id="hub-a", seq=2, ts=102), now=111)  # duplicate
    ing.add(t + "events", _msg(hub_id="hub-a", seq=1, ts=103, type="agent_start"), now=111)
    ing.add(t + "config/reported", _msg(version=4, status="rejected", reason="bad"), now=112)
    ing.add(t + "config/reported", _msg(version=3, status="applied"), now=112)  # older
    ing.add(t + "health", b"not json", now=112)
    ing.add("relais/other", _msg(x=1), now=112)
    registry.write_batch(db, ing.take())
    hub = registry.get_hub(db, "hub-a")
    assert hub is not None
    assert (hub["online"], hub["session"], hub["last_seq"], hub["last_seen"]) == (1, "3", 5, 111)
    assert json.loads(hub["last_health"])["cpu"] == 50
    assert (hub["reported_version"], hub["reported_status"]) == (4, "rejected")
    assert registry.seq_counts(db) == {"hub-a": (3, 1, 5)}
    assert registry.open_gaps(db) == {("hub-a", "health"): [(3, 4)]}
    assert ing.counters.duplicates == 1 and ing.counters.bad == 2

    # A restart: cursors come back from the registry; a late sample closes part of the gap.
    ing2 = Ingestor(registry.load_cursors(db), registry.open_gaps(db))
    ing2.add(t + "health", _msg(hub_id="hub-a", seq=3, ts=103), now=120)
    ing2.add(t + "state", _msg(online=False, ts=90, session=2), now=121)  # late will
    registry.write_batch(db, ing2.take())
    assert registry.open_gaps(db) == {("hub-a", "health"): [(4, 4)]}
    assert registry.get_hub(db, "hub-a")["online"] == 1  # type: ignore[index]
    assert ing2.counters.stale_states == 1
    ing2.add(t + "state", _msg(online=False, ts=130, session=3), now=130)  # real goodbye
    registry.write_batch(db, ing2.take())
    assert registry.get_hub(db, "hub-a")["online"] == 0  # type: ignore[index]


def test_write_batch_stores_each_sample_once_with_its_values(central_db_url: str) -> None:
    # PostgreSQL sends a batch's samples as one JSON document: the values come back as they
    # were (text with quotes and non-ASCII, full-precision ts, big seq); a sample already
    # stored or repeated within the batch is skipped, not an error.
    db = registry.open_registry(central_db_url)
    data = '{"note":"caf\u00e9 \\"quoted\\" \u2713","n":1}'
    ts = 1764886401.123456
    first = registry.Batch(health=[("hub-a", 1, ts, data)])
    registry.write_batch(db, first)
    again = registry.Batch(
        health=[
            ("hub-a", 1, 1.0, "{}"),
            ("hub-a", 2**40, ts + 1, "{}"),
            ("hub-a", 2**40, 2.0, "[]"),
        ],
        events=[("hub-b", 7, ts, "voucher_redeemed", data), ("hub-b", 7, 3.0, "x", "{}")],
    )
    registry.write_batch(db, again)
    health = [
        (r["hub_id"], r["seq"], r["ts"], r["data"])
        for r in db.query("SELECT hub_id, seq, ts, data FROM health ORDER BY seq")
    ]
    assert health == [("hub-a", 1, ts, data), ("hub-a", 2**40, ts + 1, "{}")]
    events = [
        (r["hub_id"], r["seq"], r["ts"], r["type"], r["data"])
        for r in db.query("SELECT hub_id, seq, ts, type, data FROM events")
    ]
    assert events == [("hub-b", 7, ts, "voucher_redeemed", data)]


def test_downsample_keeps_recent_and_one_per_hour_when_old(central_db_url: str) -> None:
    db = registry.open_registry(central_db_url)
    now = 30 * 86_400.0
    old = now - 10 * 86_400
    rows = [("h", i, old + i * 600, "{}") for i in range(12)]  # 2 hours of 10-min samples
    rows += [("h", 100 + i, now - 60 * i, "{}") for i in range(5)]  # recent
    db.executemany("INSERT INTO health (hub_id, seq, ts, data) VALUES (?, ?, ?, ?)", rows)
    deleted = registry.downsample_health(db, now=now)
    left = [r["seq"] for r in db.query("SELECT seq FROM health ORDER BY seq")]
    assert deleted == 12 - len(left) + 5
    old_left = [s for s in left if s < 100]
    hours = {int((old + s * 600) // 3600) for s in range(12)}
    assert len(old_left) == len(hours)
    assert [s for s in left if s >= 100] == [100, 101, 102, 103, 104]
    assert registry.downsample_health(db, now=now) == 0  # nothing newly aged
    # Eight days later the "recent" samples have aged too: one per hour is kept,
    # and the rows thinned before are not visited again.
    assert registry.downsample_health(db, now=now + 8 * 86_400) == 5 - len(
        {int((now - 60 * i) // 3600) for i in range(5)}
    )
    assert len(list(db.query("SELECT seq FROM health"))) == len(hours) + len(
        {int((now - 60 * i) // 3600) for i in range(5)}
    )
