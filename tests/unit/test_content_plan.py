"""The content cache's pure planners: window, budget/eviction, fetch order, reconcile."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub_agent.config import ContentItem
from hub_agent.content import plan
from hub_agent.content.bucket import TokenBucket
from hub_agent.content.plan import Held
from hub_agent.content.window import in_window, seconds_until_open

SHA = "a" * 64


def item(item_id: str, size: int, pinned: bool = False, **kw: Any) -> ContentItem:
    return ContentItem(
        id=item_id,
        title={"fr": item_id, "en": item_id},
        kind=kw.pop("kind", "pdf"),
        url=f"http://cdn.example.test/{item_id}.pdf",
        size=size,
        sha256=kw.pop("sha256", SHA),
        priority="pinned" if pinned else "normal",
        **kw,
    )


def held(item_id: str, size: int, state: plan.State = "ready", **kw: Any) -> Held:
    on_disk = kw.pop("bytes_on_disk", size if state == "ready" else 0)
    return Held(id=item_id, state=state, size=size, sha256=SHA, bytes_on_disk=on_disk, **kw)


# --- window ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hhmm", "inside"),
    [
        ("21:59", False),
        ("22:00", True),
        ("23:30", True),
        ("00:00", True),
        ("05:59", True),
        ("06:00", False),
        ("12:00", False),
    ],
)
def test_window_wraps_midnight(hhmm: str, inside: bool) -> None:
    h, m = (int(x) for x in hhmm.split(":"))
    assert in_window("22:00-06:00", time(h, m)) is inside


def test_window_same_day_and_always() -> None:
    assert in_window("01:00-05:00", time(3, 0))
    assert not in_window("01:00-05:00", time(5, 0))
    assert not in_window("01:00-05:00", time(0, 59))
    assert in_window("00:00-00:00", time(13, 37))  # start == end: always


def test_window_is_read_in_lome_time() -> None:
    lome = ZoneInfo("Africa/Lome")
    # 21:30 UTC is 21:30 in Lomé (UTC+0): half an hour before 22:00 opens the window.
    now = datetime(2026, 11, 23, 21, 30, tzinfo=ZoneInfo("UTC")).astimezone(lome)
    assert not in_window("22:00-06:00", now)
    assert seconds_until_open("22:00-06:00", now) == 1800
    # the same instant seen from a UTC+1 zone is 22:30: a different answer
    paris = now.astimezone(ZoneInfo("Africa/Lagos"))
    assert in_window("22:00-06:00", paris)
    assert seconds_until_open("22:00-06:00", paris) == 0


def test_seconds_until_open_rolls_to_tomorrow() -> None:
    now = datetime(2026, 11, 23, 6, 0)
    assert seconds_until_open("02:00-05:00", now) == 20 * 3600


# --- token bucket --------------------------------------------------------------------------


def test_bucket_long_run_rate_is_exact() -> None:
    b = TokenBucket(rate_bps=1000, burst=100, now=0.0)
    t = 0.0
    for _ in range(100):  # 100 chunks of 64 bytes = 6400 bytes
        t += b.reserve(64, t)
    # the first 100 bytes are the burst; the rest costs exactly its time at 1000 B/s
    assert t == pytest.approx((6400 - 100) / 1000)


def test_bucket_allows_the_burst_after_idle() -> None:
    b = TokenBucket(rate_bps=1000, burst=500, now=0.0)
    assert b.reserve(500, 10.0) == 0
    assert b.reserve(100, 10.0) == pytest.approx(0.1)


# --- budget and eviction -------------------------------------------------------------------


def test_oversize_item_is_refused() -> None:
    room = plan.plan_room(item("big", 2000), {}, budget=1000)
    assert room.refused == "oversize"
    assert "2000" in room.detail and "1000" in room.detail


def test_fits_without_eviction() -> None:
    h = {"a": held("a", 300)}
    assert plan.plan_room(item("new", 700), h, budget=1000) == plan.Room()


def test_least_recently_used_goes_first_pinned_stay() -> None:
    h = {
        "pin": held("pin", 400, pinned=True, last_used=1.0),  # oldest, but pinned
        "old": held("old", 200, last_used=10.0, hits=50),
        "mid": held("mid", 200, last_used=20.0),
        "new": held("new", 200, last_used=30.0),
    }
    room = plan.plan_room(item("x", 300), h, budget=1000)
    assert room.evict == ("old", "mid")  # frees 400: 1000 - 1000 + 400 >= 300
    assert room.refused is None


def test_ties_in_use_go_to_fewest_hits() -> None:
    h = {"a": held("a", 500, last_used=5.0, hits=9), "b": held("b", 500, last_used=5.0, hits=1)}
    assert plan.plan_room(item("x", 400), h, budget=1000).evict == ("b",)


def test_no_room_when_pinned_fill_the_budget_and_nothing_evicted_in_vain() -> None:
    h = {"p1": held("p1", 500, pinned=True), "p2": held("p2", 300, pinned=True)}
    h["n"] = held("n", 100)
    room = plan.plan_room(item("x", 400), h, budget=1000)
    assert room.refused == "no_room"
    assert room.evict == ()


def test_partial_downloads_count_against_the_budget() -> None:
    h = {"a": held("a", 900, state="downloading", bytes_on_disk=800)}
    room = plan.plan_room(item("x", 300), h, budget=1000)
    assert room.refused == "no_room"  # the .part is not evictable (it is paid for)


# --- what to fetch next ----------------------------------------------------------------------


def test_resume_first_then_pinned_then_manifest_order() -> None:
    manifest = [item("a", 10), item("b", 10, pinned=True), item("c", 10)]
    h = {i.id: held(i.id, 10, state="queued") for i in manifest}
    assert plan.next_to_fetch(manifest, h, 1000, now=0).id == "b"  # type: ignore[union-attr]
    h["c"] = held("c", 10, state="downloading", bytes_on_disk=4)
    assert plan.next_to_fetch(manifest, h, 1000, now=0).id == "c"  # type: ignore[union-attr]


def test_ready_and_oversize_and_backing_off_are_skipped() -> None:
    manifest = [item("ok", 10), item("huge", 5000), item("retry", 10)]
    h = {
        "ok": held("ok", 10),
        "huge": held("huge", 5000, state="queued"),
        "retry": held("retry", 10, state="failed", next_attempt=100.0),
    }
    assert plan.next_to_fetch(manifest, h, 1000, now=50) is None
    assert plan.next_to_fetch(manifest, h, 1000, now=100).id == "retry"  # type: ignore[union-attr]


def test_evicted_comes_back_only_when_it_fits_freely() -> None:
    manifest = [item("a", 600), item("b", 600)]
    h = {"a": held("a", 600, state="evicted"), "b": held("b", 600)}
    assert plan.next_to_fetch(manifest, h, 1000, now=0) is None  # would evict b: no ping-pong
    h["b"] = held("b", 600, state="evicted")
    assert plan.next_to_fetch(manifest, h, 1000, now=0).id == "a"  # type: ignore[union-attr]


def test_backoff_doubles_and_is_capped() -> None:
    assert [plan.backoff_s(n, 10) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert plan.backoff_s(50, 10) == plan.MAX_BACKOFF_S


# --- reconcile ------------------------------------------------------------------------------


def test_reconcile_adds_resets_and_drops() -> None:
    manifest = [
        item("new", 10),
        item("same", 10),
        item("changed", 10, sha256="b" * 64),
        item("old", 10, valid_until="2026-01-01"),
    ]
    h = {
        "same": held("same", 10),
        "changed": held("changed", 10),
        "old": held("old", 10),
        "gone": held("gone", 10),
    }
    r = plan.reconcile(manifest, h, today=date(2026, 6, 1))
    assert r.add == ("new",)
    assert r.reset == ("changed",)
    assert sorted(r.drop) == [("gone", "unassigned"), ("old", "expired")]
