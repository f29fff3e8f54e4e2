"""Shared helpers for the telemetry/config broker tests, and the link's own basics.

A real Mosquitto with one user per hub and the production ACL
(``pattern readwrite relais/hubs/%u/#``) plus a ``central`` user that reads everything.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub_agent.config import HubConfig, load_config
from lab.broker import Broker
from tests.conftest import require_mosquitto

pytestmark = pytest.mark.root

ACL = "user central\ntopic readwrite relais/#\n\npattern readwrite relais/hubs/%u/#\n"
PASSWORDS = {"hub-a": "pw-hub-a-1", "hub-b": "pw-hub-b-2", "central": "pw-central-3"}


def secure_broker(broker: Broker) -> Broker:
    """Per-hub users and the ACL, as the controller sets them up at enrollment."""
    for user, pw in PASSWORDS.items():
        broker.add_user(user, pw)
    broker.set_acl(ACL)
    broker.restart()
    return broker


def hub_config(tmp_path: Path, broker: Broker, hub_id: str = "hub-a", **extra: Any) -> Path:
    """A complete hub YAML for ``hub_id`` pointing at the test broker; returns its path."""
    doc: dict[str, Any] = {
        "version": 1,
        "hub": {"id": hub_id, "kind": "mairie", "name": f"Test {hub_id}"},
        "data_dir": str(tmp_path / f"data-{hub_id}"),
        "network": {"wan": {"probe_host": "127.0.0.1", "interface": "lo"}},
        "portal": {"login_methods": ["free"]},
        "mqtt": {
            "url": f"mqtt://{broker.host}:{broker.port}",
            "username": hub_id,
            "password": PASSWORDS[hub_id],
            "telemetry_interval_s": 1,
            "drain_rate_per_s": 10_000,
        },
    }
    for key, value in extra.items():
        doc[key] = value
    path = tmp_path / f"{hub_id}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def load(tmp_path: Path, broker: Broker, hub_id: str = "hub-a", **extra: Any) -> HubConfig:
    return load_config(hub_config(tmp_path, broker, hub_id, **extra), env={})


class Collector:
    """The centre's side: a persistent-session subscriber that records what arrives."""

    def __init__(
        self, broker: Broker, topics: list[str], user: str = "central", client_id: str = "col"
    ) -> None:
        self.messages: list[tuple[str, Any, bool]] = []
        self.lock = threading.RLock()
        self.arrived = threading.Condition(self.lock)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.max_inflight_messages_set(1000)
        self.topics = topics
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(5), "collector could not subscribe"

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload) if msg.payload else None
        except ValueError:
            body = msg.payload
        with self.arrived:
            self.messages.append((msg.topic, body, bool(msg.retain)))
            self.arrived.notify_all()

    def on(self, suffix: str) -> list[Any]:
        with self.lock:
            return [b for t, b, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, pred: Callable[[], bool], timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def seqs(bodies: list[Any]) -> list[int]:
    return [int(b["seq"]) for b in bodies if isinstance(b, dict) and "seq" in b]


def retained(broker: Broker, topic: str, user: str = "central", timeout: float = 3) -> Any:
    """The retained message on ``topic`` as a fresh subscriber sees it (None if none)."""
    got: list[Any] = []
    ev = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    c.username_pw_set(user, PASSWORDS[user])

    def on_message(cl: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(json.loads(msg.payload))
            ev.set()

    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, 1)
    c.connect(broker.host, broker.port)
    c.loop_start()
    ev.wait(timeout)
    c.disconnect()
    c.loop_stop()
    return got[-1] if got else None


async def until(pred: Callable[[], bool], timeout: float = 20, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


# -- the link's basics ----------------------------------------------------------------------


def test_online_state_with_growing_session_and_clean_stop_goes_offline(
    broker: Broker, tmp_path: Path
) -> None:
    require_mosquitto()
    secure_broker(broker)
    from hub_agent.telemetry.service import Telemetry

    cfg = load(tmp_path, broker)

    async def run_once() -> tuple[Any, Any]:
        tel = Telemetry(cfg, probe=None)
        await tel.start()
        assert await until(tel.link.connected.is_set, 10)
        await asyncio.sleep(0.2)
        online = retained(broker, "relais/hubs/hub-a/state")
        await tel.stop()
        return online, retained(broker, "relais/hubs/hub-a/state")

    on1, off1 = asyncio.run(run_once())
    on2, _ = asyncio.run(run_once())
    assert on1["online"] is True and on1["config_version"] == 1 and on1["agent_version"]
    assert off1["online"] is False and off1["session"] == on1["session"]
    assert on2["session"] > on1["session"], "session number must grow with every connect"


def test_wrong_password_is_refused_and_never_logged(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_mosquitto()
    secure_broker(broker)
    from hub_agent.telemetry.service import Telemetry

    cfg = load(tmp_path, broker)
    bad = cfg.model_copy(
        update={"mqtt": cfg.mqtt.model_copy(update={"password": _secret("not-the-password")})}
    )

    async def run() -> Telemetry:
        tel = Telemetry(bad, probe=None)
        await tel.start()
        await asyncio.sleep(1.0)
        await tel.stop()
        return tel

    caplog.set_level("DEBUG")
    tel = asyncio.run(run())
    assert tel.link.status.connects == 0
    assert "refused" in (tel.link.status.last_error or "")
    assert "not-the-password" not in caplog.text


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def test_health_samples_carry_the_uplink_probe_and_agent_stats(
    broker: Broker, tmp_path: Path
) -> None:
    require_mosquitto()
    secure_broker(broker)
    from hub_agent.telemetry.health import AgentStats
    from hub_agent.telemetry.service import Telemetry

    col = Collector(broker, ["relais/hubs/hub-a/health"])
    cfg = load(tmp_path, broker)  # probe_host 127.0.0.1, WAN interface lo

    async def run() -> None:
        tel = Telemetry(
            cfg,
            interval_s=0.1,
            probe_every_s=0.1,
            agent_stats=lambda: AgentStats(5, 4, 1_000_000, 1, 250.0, 0.5),
        )
        await tel.start()
        assert await until(lambda: any("lat" in b for b in col.on("/health")), 15)
        await tel.stop()

    asyncio.run(run())
    sample = next(b for b in col.on("/health") if "lat" in b)
    assert sample["hub_id"] == "hub-a" and sample["cv"] == 1 and sample["loss"] == 0
    assert 0 <= sample["lat"] < 100 and "lo" in sample["if"]  # loopback: ~0.0 ms
    assert (sample["dev"], sample["auth"], sample["srv"], sample["cut"]) == (5, 4, 1_000_000, 1)
    assert sample["cache"] == 250 and sample["hit"] == 0.5
    col.close()


def test_status_shows_the_live_agent_connected_then_its_queue_while_the_broker_is_down(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_mosquitto()
    secure_broker(broker)
    from hub_agent.status import status_command
    from hub_agent.telemetry.service import Telemetry

    path = hub_config(tmp_path, broker)
    cfg = load_config(path, env={})

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        tel = Telemetry(cfg, probe=None, interval_s=0.05)
        await tel.start()
        assert await until(tel.link.connected.is_set, 10)
        await asyncio.sleep(2.5)  # one status write
        assert status_command(path, as_json=True) == 0
        up = json.loads(capsys.readouterr().out)
        broker.stop()
        await asyncio.sleep(2.5)
        assert status_command(path, as_json=True) == 0
        down = json.loads(capsys.readouterr().out)
        broker.start()
        await tel.stop()
        return up, down

    up, down = asyncio.run(run())
    assert up["agent_running"] and up["broker"]["connected"] and up["broker"]["session"] >= 1
    assert up["config"]["version"] == 1
    assert down["agent_running"] and not down["broker"]["connected"]
    assert down["outbox"]["health"] >= 20 and down["outbox"]["oldest_queued_ts"] is not None
