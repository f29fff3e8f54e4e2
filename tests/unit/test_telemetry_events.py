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
        "voucher_redeemed", "code_usage", "config_applied", "config_rejected", "cache_sync_done",
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


def test_no_mac_address_reaches_the_outbox(tmp_path: Path) -> None:
    """Events are the one way device data leaves the hub: MACs become keyed pseudonyms."""
    from hub_agent.sessions.service import device_pseudonym
    from hub_agent.telemetry.events import MAC_RE

    key = b"deployment-secret"
    box = Outbox(open_db(tmp_path / "hub.db", OUTBOX), "hub-a", 1 << 20)
    ev = Events(box, key=lambda: key)
    mac = "02:42:0a:2a:00:07"
    ev.emit("device_authorised", mac=mac, plan="jour", method="voucher")
    ev.emit("quota_reached", mac="02-42-0A-2A-00-07", reason="data_quota", action="cut")
    ev.emit("device_deauthorised", mac=mac, reason="logout")
    ev.emit("cache_sync_failed", reason=f"peer {mac} and 0242.0a2a.0007 said no", items=[mac])
    ev.emit("agent_start", version="1.0", boot="2026-03-14 10:00:00")  # times are not MACs
    rows = [r.payload for r in box.after(0, 100)]
    assert len(rows) == 5
    for raw in rows:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        assert not MAC_RE.search(text), text
        assert "02420a2a0007" not in text.replace(":", "").replace("-", "").replace(".", "")
    bodies = [json.loads(r) for r in rows]
    want = device_pseudonym(key, mac)
    assert [b.get("device") for b in bodies[:3]] == [want] * 3  # one device, one pseudonym
    assert "mac" not in bodies[0] and bodies[0]["plan"] == "jour"
    assert bodies[3]["reason"] == f"peer {want} and {want} said no" and bodies[3]["items"] == [want]
    assert bodies[4]["boot"] == "2026-03-14 10:00:00"


def test_without_a_deployment_key_macs_are_still_hashed(tmp_path: Path) -> None:
    box = Outbox(open_db(tmp_path / "hub.db", OUTBOX), "hub-a", 1 << 20)
    Events(box).emit("device_authorised", mac="02:00:00:00:00:01", plan="jour")
    body = json.loads(next(iter(box.after(0, 10))).payload)
    assert "mac" not in body and len(body["device"]) == 16 and "02:00" not in json.dumps(body)
