"""Event names, emit() into the outbox, and the uplink/disk edge detectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_agent.store import open_db
from hub_agent.telemetry.events import EVENT_TYPES, Events, UplinkState, disk_step, uplink_step
from hub_agent.telemetry.outbox import OUTBOX, Outbox


def test_the_contracts_event_types() -> None:
    assert {
        "device_authorised", "device_deauthorised", "device_throttled", "quota_reached",
        "voucher_redeemed", "config_applied", "config_rejected", "cache_sync_done",
        "cache_sync_failed", "cache_item_evicted", "cache_item_removed", "agent_start",
        "agent_stop", "disk_nearly_full", "uplink_lost", "uplink_back",
    } == EVENT_TYPES  # fmt: skip


def test_emit_writes_to_the_outbox_with_its_own_seq(tmp_path: Path) -> None:
    woke: list[int] = []
    box = Outbox(open_db(tmp_path / "hub.db", OUTBOX), "hub-a", 1 << 20)
    ev = Events(box, on_put=lambda: woke.append(1))
    box.put("health", {"cpu": 1})
    assert ev.emit("quota_reached", mac="02:00:00:00:00:01", plan="jour") == 1
    assert ev.emit("device_deauthorised", mac="02:00:00:00:00:01") == 2
    bodies = [json.loads(r.payload) for r in box.after(0, 10) if r.kind == "event"]
    assert bodies[0]["type"] == "quota_reached" and bodies[0]["plan"] == "jour"
    assert [b["seq"] for b in bodies] == [1, 2] and len(woke) == 2


def test_emit_refuses_unknown_types_and_reserved_fields(tmp_path: Path) -> None:
    ev = Events(Outbox(open_db(tmp_path / "hub.db", OUTBOX), "hub-a", 1 << 20))
    with pytest.raises(ValueError, match="type"):
        ev.emit("device_exploded")
    with pytest.raises(ValueError, match="seq"):
        ev.emit("agent_start", seq=5)


def test_uplink_is_lost_after_three_failures_and_back_at_once() -> None:
    st = UplinkState()
    out = []
    for ok in [False, False, True, False, False, False, False, True, True]:
        st, ev = uplink_step(st, ok)
        out.append(ev)
    assert out == [None, None, None, None, None, "uplink_lost", None, "uplink_back", None]


def test_disk_nearly_full_fires_once_and_rearms_below_the_low_mark() -> None:
    state, out = False, []
    for pct in [80, 91, 95, 88, 84, 92]:
        state, ev = disk_step(state, pct)
        out.append(ev)
    assert out == [None, "disk_nearly_full", None, None, None, "disk_nearly_full"]
