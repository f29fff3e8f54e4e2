"""Config over a real Mosquitto: signed, retained, verified, applied or refused, reported."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub_agent.config import HubConfig
from hub_agent.configsync import ConfigSync, load_active_config
from hub_agent.signing import SigningKey, sign_envelope
from hub_agent.telemetry.service import Telemetry
from lab.broker import Broker
from tests.conftest import require_mosquitto
from tests.linux.test_telemetry_lab import (
    PASSWORDS,
    Collector,
    hub_config,
    load,
    secure_broker,
    until,
)

pytestmark = pytest.mark.root

CENTRAL = SigningKey.generate()
ROGUE = SigningKey.generate()
DESIRED = "relais/hubs/hub-a/config/desired"


def central_publish(broker: Broker, topic: str, payload: bytes, user: str = "central") -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    c.username_pw_set(user, PASSWORDS[user])
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


class Box:
    """Stands for the firewall/shaping/portal appliers: records, can be told to fail."""

    def __init__(self) -> None:
        self.applied: list[int] = []
        self.fail_on: int | None = None

    def apply(self, cfg: HubConfig) -> None:
        if cfg.version == self.fail_on:
            raise RuntimeError(f"tc refused the classes of v{cfg.version}")
        self.applied.append(cfg.version)


def base(tmp_path: Path, broker: Broker) -> HubConfig:
    return load(tmp_path, broker, trust={"central_public_key": CENTRAL.public_b64})


def envelope(cfg: HubConfig, version: int, key: SigningKey = CENTRAL, **change: Any) -> bytes:
    wire = cfg.to_wire()
    wire["version"] = version
    wire.update(change)
    return json.dumps(sign_envelope(key, cfg.hub.id, version, wire)).encode()


def reported(col: Collector) -> list[dict[str, Any]]:
    return [b for b in col.on("/config/reported") if isinstance(b, dict)]


def _more_than(col: Collector, n: int) -> bool:
    return len(reported(col)) > n


def test_configs_are_applied_rejected_or_rolled_back_and_reported(
    broker: Broker, tmp_path: Path
) -> None:
    require_mosquitto()
    secure_broker(broker)
    col = Collector(
        broker,
        [
            "relais/hubs/hub-a/config/reported",
            "relais/hubs/hub-a/events",
            "relais/hubs/hub-a/state",
        ],
    )
    cfg = base(tmp_path, broker)
    box = Box()
    box.fail_on = 7
    unsigned = json.loads(envelope(cfg, 3))
    del unsigned["sig"]
    cases: list[tuple[bytes, str, str | None]] = [
        (envelope(cfg, 2), "applied", None),
        (json.dumps(unsigned).encode(), "rejected", "not signed"),
        (envelope(cfg, 4, key=ROGUE), "rejected", "signed by an unknown key"),
        (envelope(cfg, 1), "rejected", "1 is not above the applied 2"),
        (envelope(cfg, 5, plans=[{"id": "x"}]), "rejected", "plans.0.name"),
        (envelope(cfg, 7), "rolled_back", "tc refused the classes of v7"),
        (envelope(cfg, 8), "applied", None),
    ]

    async def run() -> list[int]:
        tel = Telemetry(cfg, probe=None, interval_s=5)
        sync = ConfigSync(cfg, apply=box.apply, telemetry=tel)
        await tel.start()
        assert await until(tel.link.connected.is_set, 10)
        running: list[int] = []
        for i, (payload, status, reason) in enumerate(cases):
            await asyncio.to_thread(central_publish, broker, DESIRED, payload)
            assert await until(partial(_more_than, col, i), 10), f"no report for case {i}"
            got = reported(col)[i]
            assert got["status"] == status, (i, got)
            if reason is None:
                assert got["reason"] is None
            else:
                assert reason in got["reason"], (i, got["reason"])
            running.append(sync.current.version)
        await tel.stop()
        return running

    running = asyncio.run(run())
    # The running config only moves on "applied": 2, then unchanged until 8.
    assert running == [2, 2, 2, 2, 2, 2, 8]
    assert box.applied == [2, 2, 8], "v7 failed and v2 was re-applied (the rollback)"
    events = [e for e in col.on("/events") if e.get("type", "").startswith("config_")]
    assert [e["type"] for e in events].count("config_applied") == 2
    assert [e["type"] for e in events].count("config_rejected") == 5
    # the retained online state followed each applied version within one session
    online = [b for b in col.on("/state") if isinstance(b, dict) and b.get("online")]
    assert [b["config_version"] for b in online] == [1, 2, 8], online
    assert len({b["session"] for b in online}) == 1
    col.close()


def test_a_hub_that_was_offline_gets_the_retained_config_on_reconnect(
    broker: Broker, tmp_path: Path
) -> None:
    require_mosquitto()
    secure_broker(broker)
    cfg = base(tmp_path, broker)
    fallback = hub_config(tmp_path, broker, trust={"central_public_key": CENTRAL.public_b64})

    async def session(current: HubConfig, box: Box, settle: float) -> int:
        tel = Telemetry(current, probe=None, interval_s=5)
        sync = ConfigSync(current, apply=box.apply, telemetry=tel)
        await tel.start()
        assert await until(tel.link.connected.is_set, 10)
        await until(lambda: bool(box.applied), settle)
        await tel.stop()
        return sync.current.version

    assert asyncio.run(session(cfg, Box(), 0.5)) == 1  # online once, then offline
    central_publish(broker, DESIRED, envelope(cfg, 6))  # pushed while the hub is off
    broker.restart()  # and the broker restarted meanwhile (retained + persistence)
    box = Box()
    assert asyncio.run(session(cfg, box, 10)) == 6
    assert box.applied == [6]
    # A restart with the broker gone resumes with v6 from disk.
    broker.stop()
    assert load_active_config(cfg.data_dir, fallback, env={}).version == 6


def test_acl_hub_a_cannot_publish_under_hub_b(broker: Broker, tmp_path: Path) -> None:
    require_mosquitto()
    secure_broker(broker)
    col = Collector(broker, ["relais/hubs/hub-b/#", "relais/hubs/hub-a/events"])
    cfg = load(tmp_path, broker)

    async def run() -> None:
        tel = Telemetry(cfg, probe=None, interval_s=5)
        await tel.start()
        assert await until(tel.link.connected.is_set, 10)
        for topic in ("health", "events", "state", "config/reported"):
            fut = tel.link.publish(f"relais/hubs/hub-b/{topic}", {"seq": 1, "forged": True})
            # Mosquitto acknowledges (MQTT v5: with a "not authorized" reason) and drops it.
            await asyncio.wait_for(asyncio.gather(fut, return_exceptions=True), 5)
        tel.events.emit("cache_sync_done", items=3)  # the control: its own topic works
        assert await until(
            lambda: any(e.get("type") == "cache_sync_done" for e in col.on("/events")), 10
        )
        await tel.stop()

    asyncio.run(run())
    forged = [m for m in col.messages if m[0].startswith("relais/hubs/hub-b/")]
    assert forged == [], forged
    col.close()


def _seqs_on(col: Collector) -> set[int]:
    return {b["seq"] for b in col.on("/health") if isinstance(b, dict)}


def test_a_pushed_broker_change_moves_the_link_or_is_rolled_back(
    broker: Broker, tmp_path: Path
) -> None:
    """Credentials and broker address are config too: a hub must follow a pushed change
    without a restart, and must not strand itself on a broker that refuses it."""
    require_mosquitto()
    secure_broker(broker)
    topics = ["relais/hubs/hub-a/config/reported", "relais/hubs/hub-a/health"]
    with Broker() as second:
        secure_broker(second)
        old_col, new_col = Collector(broker, topics), Collector(second, topics)
        cfg = base(tmp_path, broker)
        mqtt_wire = cfg.to_wire()["mqtt"]
        box = Box()

        async def run() -> int:
            tel = Telemetry(cfg, probe=None, interval_s=0.1)
            sync = ConfigSync(cfg, apply=box.apply, telemetry=tel, broker_timeout_s=10)
            await tel.start()
            assert await until(tel.link.connected.is_set, 10)
            # A wrong password: the broker refuses it, so the hub goes back and says why.
            wrong = envelope(cfg, 2, mqtt={**mqtt_wire, "password": "not-the-password"})
            await asyncio.to_thread(central_publish, broker, DESIRED, wrong)
            assert await until(partial(_more_than, old_col, 0), 20), "no report for v2"
            got = reported(old_col)[0]
            assert got["status"] == "rolled_back", got
            assert "refused" in got["reason"] and "not-the-password" not in got["reason"]
            assert sync.current.version == 1 and box.applied == [2, 1]
            assert tel.link.connected.is_set() and tel.link.settings.port == broker.port
            # Another broker: the link moves and reports there; samples follow it.
            moved = envelope(cfg, 3, mqtt={**mqtt_wire, "url": second.url})
            await asyncio.to_thread(central_publish, broker, DESIRED, moved)
            assert await until(partial(_more_than, new_col, 0), 20), "no report for v3"
            got = reported(new_col)[0]
            assert got["status"] == "applied" and got["version"] == 3, got
            assert sync.current.version == 3 and tel.link.settings.port == second.port
            n = len(new_col.on("/health"))
            assert await until(lambda: len(new_col.on("/health")) > n + 5, 10)
            await tel.stop()
            return tel.outbox.last_seq("health")

        last = asyncio.run(run())
        # Not a sample lost across the moves: each seq reached one broker or the other.
        seen = _seqs_on(old_col) | _seqs_on(new_col)
        assert new_col.wait_for(
            lambda: _seqs_on(old_col) | _seqs_on(new_col) >= set(range(1, last + 1)), 10
        ), sorted(set(range(1, last + 1)) - seen)[:20]
        old_col.close()
        new_col.close()
