"""Central operations against a real Mosquitto using the password file and ACL hubctl writes.

enroll -> hubs (with their own credentials) publish -> the controller's registry shows them
online with health; push to a group -> every hub verifies the signature and reports
applied; invalid configs are refused before publishing; a hub cannot publish for another;
wills and late wills; staged rollout halts; the fleet page renders in headless Chromium.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from hub_agent.config import validate_config
from hub_agent.mqtt.core import BrokerUrl
from hub_agent.signing import EnvelopeError, verify_envelope
from lab.broker import Broker
from provisioning import registry, topics
from provisioning.controller.service import Ingest
from provisioning.controller.web import serve
from provisioning.enroll import enroll
from provisioning.registry import HubRecord
from provisioning.statedir import StateDir
from tests.conftest import require_mosquitto

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "test-artifacts"
HUBS = [
    HubRecord("tg-kara-ecole-01", "school", "EPP Kara Centre", "Kara", "Kozah"),
    HubRecord("tg-lome-ecole-02", "school", "EPP Bè", "Maritime", "Golfe", groups=("pilot",)),
    HubRecord("tg-sokode-csps-01", "clinic", "CSPS Sokodé", "Centrale", "Tchaoudjo"),
]


def wait_for(cond: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class SimHub:
    """A hub as the centre sees it: its own credentials, will, health, config sync."""

    hub_id: str
    vars: dict[str, Any]
    broker: Broker
    reject_with: str | None = None
    session: int = 1
    seq: int = 0
    applied: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0

    def __post_init__(self) -> None:
        self.version = int(self.vars["relais_hub_config"]["version"])
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.hub_id, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(self.hub_id, self.vars["relais_mqtt_password"])
        self.client.will_set(self.topic("state"), self.state(False), qos=1, retain=True)
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.client.on_connect = lambda *a: self.connected.set()

    def topic(self, stream: str) -> str:
        return f"relais/hubs/{self.hub_id}/{stream}"

    def state(self, online: bool, ts: float | None = None) -> bytes:
        return json.dumps(
            {
                "online": online,
                "ts": time.time() if ts is None else ts,
                "agent_version": "test",
                "config_version": self.version,
                "session": self.session,
            }
        ).encode()

    def start(self) -> SimHub:
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self.connected.wait(5)
        self.client.subscribe(self.topic("config/desired"), qos=1)
        self.publish("state", self.state(True), retain=True)
        return self

    def publish(self, stream: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(self.topic(stream), payload, qos=1, retain=retain).wait_for_publish(5)

    def health(self, n: int = 1) -> None:
        for _ in range(n):
            self.seq += 1
            body = {
                "hub_id": self.hub_id,
                "seq": self.seq,
                "ts": time.time(),
                "cpu": 20 + self.seq,
                "dsk": 41,
                "dev": 3,
                "srv": 5_000_000,
                "mem": 30,
                "lat": 40.5,
                "loss": 0,
            }
            self.publish("health", json.dumps(body).encode())

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        envelope = json.loads(msg.payload)
        self.received.append(envelope)
        version = envelope.get("version")
        try:
            body = verify_envelope(envelope, self.vars["relais_central_public_key"], self.hub_id)
            cfg = validate_config(body["config"])
            if cfg.version <= self.version:
                return  # an old retained config: nothing to do
            if self.reject_with:
                raise ValueError(self.reject_with)
            status, reason = "applied", None
            self.version = cfg.version
            self.applied.append(cfg.version)
        except (EnvelopeError, ValueError) as e:
            status, reason = "rejected", str(e)
        report = {"version": version, "status": status, "reason": reason, "ts": time.time()}
        client.publish(self.topic("config/reported"), json.dumps(report), qos=1, retain=True)

    def vanish(self) -> None:
        """Drop off as a power cut would: the broker publishes the will."""
        rc = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        self.client.disconnect(reasoncode=rc)
        self.client.loop_stop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Central:
    state: StateDir
    broker: Broker
    ingest: Ingest
    web_port: int
    hubs: dict[str, SimHub]

    @property
    def db(self) -> Any:
        return registry.open_registry(self.state.registry_path)

    def env(self) -> dict[str, str]:
        return dict(
            os.environ, RELAIS_CENTRAL_DIR=str(self.state.root), RELAIS_MQTT_URL=self.broker.url
        )

    def hubctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "hubctl"), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )

    def hub_row(self, hub_id: str) -> dict[str, Any]:
        row = registry.get_hub(self.db, hub_id)
        assert row is not None
        return row


def use_enrolled_files(broker: Broker, state: StateDir) -> None:
    """Point the test broker at the password file and ACL that enroll wrote."""
    shutil.copy(state.passwd_path, broker.workdir / "passwd")
    broker.users = {"(from hubctl)": ""}  # makes Broker write password_file
    broker.allow_anonymous = False
    broker.set_acl(state.acl_path.read_text())


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    require_mosquitto()
    state = StateDir(tmp_path / "central")
    db = registry.open_registry(state.registry_path)
    with Broker() as broker:
        for hub in HUBS:
            enroll(state, db, hub, mqtt_url=broker.url)
        use_enrolled_files(broker, state)
        broker.restart()
        user, password = state.controller_credentials()
        url = BrokerUrl.parse(broker.url).with_credentials(user, password)
        ingest = Ingest(state.registry_path, url, client_id="test-controller", summary_every_s=0.1)
        ingest.start()
        server = serve(state.registry_path, "127.0.0.1", 0)
        hubs = {}
        for hub in HUBS:
            hv = yaml.safe_load(state.host_vars_path(hub.id).read_text())
            hubs[hub.id] = SimHub(hub.id, hv, broker).start()
        try:
            yield Central(state, broker, ingest, server.server_address[1], hubs)
        finally:
            for h in hubs.values():
                h.close()
            server.shutdown()
            ingest.stop()


def test_enrolled_hubs_appear_online_with_health(central: Central) -> None:
    for h in central.hubs.values():
        h.health(3)

    def all_in() -> bool:
        rows = [central.hub_row(h) for h in central.hubs]
        return all(r["online"] == 1 and r["last_seq"] == 3 for r in rows)

    wait_for(all_in, what="hubs online with 3 samples each")
    row = central.hub_row("tg-kara-ecole-01")
    assert json.loads(row["last_health"])["cpu"] == 23
    assert row["session"] == "1"
    assert registry.seq_counts(central.db)["tg-kara-ecole-01"] == (3, 1, 3)
    r = central.hubctl("fleet", "--json")
    assert r.returncode == 0, r.stderr
    fleet = {x["id"]: x for x in json.loads(r.stdout)}
    assert fleet["tg-kara-ecole-01"]["status"] == "online"
    assert fleet["tg-kara-ecole-01"]["cpu"] == 23


def _connect_as(central: Central, user: str, password: str) -> ReasonCode:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    result: list[ReasonCode] = []
    done = threading.Event()

    def on_connect(cl: Any, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        result.append(rc)
        done.set()

    c.on_connect = on_connect
    c.connect(central.broker.host, central.broker.port)
    c.loop_start()
    assert done.wait(5)
    c.disconnect()
    c.loop_stop()
    return result[0]


def test_wrong_password_is_refused(central: Central) -> None:
    assert _connect_as(central, "tg-kara-ecole-01", "not-the-password").is_failure


def test_a_hub_cannot_publish_for_another(central: Central) -> None:
    a, b = central.hubs["tg-kara-ecole-01"], central.hubs["tg-lome-ecole-02"]
    b.health(1)
    wait_for(lambda: central.hub_row(b.hub_id)["last_seq"] == 1, what="b's own sample")
    forged = {"hub_id": b.hub_id, "seq": 2, "ts": time.time(), "cpu": 99}
    a.client.publish(b.topic("health"), json.dumps(forged), qos=1).wait_for_publish(5)
    a.client.publish(b.topic("config/desired"), b"{}", qos=1, retain=True).wait_for_publish(5)
    a.client.publish(a.topic("config/desired"), b"{}", qos=1, retain=True).wait_for_publish(5)
    a.health(1)  # a marker after the forgeries: once it is in, the forgeries would be too
    wait_for(lambda: central.hub_row(a.hub_id)["last_seq"] == 1, what="a's marker")
    time.sleep(0.3)
    assert central.hub_row(b.hub_id)["last_seq"] == 1
    assert registry.seq_counts(central.db)[b.hub_id] == (1, 1, 1)
    assert b.received == [] and a.received == []  # no forged desired config reached anyone


def test_push_group_every_hub_applies(central: Central, tmp_path: Path) -> None:
    f = tmp_path / "schools.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "defaults": {"free_tier": {"daily_mb": 150}},
                "groups": {"pilot": {"free_tier": {"daily_mb": 300}}},
                "hubs": {
                    "tg-kara-ecole-01": {"portal": {"terms": {"fr": "Bienvenue à {{ hub.name }}"}}}
                },
            },
            allow_unicode=True,
        )
    )
    r = central.hubctl("push", "--group", "schools", str(f), "--timeout", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 applied" in r.stdout
    for hub_id in ("tg-kara-ecole-01", "tg-lome-ecole-02"):
        assert central.hubs[hub_id].applied == [2]
        assert f"{hub_id}" in r.stdout
    cfg = central.hubs["tg-kara-ecole-01"].received[-1]["config"]
    assert cfg["free_tier"]["daily_mb"] == 150
    assert cfg["portal"]["terms"]["fr"] == "Bienvenue à EPP Kara Centre"
    assert cfg["mqtt"]["password"] == central.hubs["tg-kara-ecole-01"].vars["relais_mqtt_password"]
    assert central.hubs["tg-lome-ecole-02"].received[-1]["config"]["free_tier"]["daily_mb"] == 300
    assert central.hubs["tg-sokode-csps-01"].applied == []  # not a school
    wait_for(
        lambda: central.hub_row("tg-kara-ecole-01")["reported_status"] == "applied",
        what="controller records the report",
    )
    row = central.hub_row("tg-kara-ecole-01")
    assert (row["desired_version"], row["reported_version"]) == (2, 2)
    # versions strictly increase: the next push is 3
    r2 = central.hubctl("push", "tg-kara-ecole-01", str(f), "--timeout", "10")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert central.hubs["tg-kara-ecole-01"].applied == [2, 3]


def test_invalid_config_is_refused_before_publishing(central: Central, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("kinds:\n  school:\n    network:\n      wan:\n        down_kbit: -5\n")
    r = central.hubctl("push", "--group", "all", str(f), "--timeout", "3")
    assert r.returncode == 2
    assert "nothing published" in r.stderr
    assert "hub tg-kara-ecole-01" in r.stderr and "network.wan.down_kbit" in r.stderr
    time.sleep(0.3)
    assert all(h.received == [] for h in central.hubs.values())
    assert central.hub_row("tg-sokode-csps-01")["desired_version"] == 1  # valid hub untouched


def test_rejection_fails_the_push_and_a_wave_halts(central: Central, tmp_path: Path) -> None:
    central.hubs["tg-kara-ecole-01"].reject_with = "uplink interface missing"
    f = tmp_path / "all.yaml"
    f.write_text("content:\n  budget_mb: 5000\n")
    r = central.hubctl(
        "push", "--group", "all", str(f), "--wave", "30%", "--max-failures", "0", "--timeout", "5"
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "rejected: uplink interface missing" in r.stdout
    assert "HALTED after wave 1/3" in r.stdout
    assert central.hubs["tg-lome-ecole-02"].received == []  # never reached
    assert central.hubs["tg-sokode-csps-01"].received == []


def test_will_marks_offline_and_a_late_will_is_ignored(central: Central) -> None:
    h = central.hubs["tg-sokode-csps-01"]
    h.health(1)
    wait_for(lambda: central.hub_row(h.hub_id)["online"] == 1, what="online")
    h.vanish()
    wait_for(lambda: central.hub_row(h.hub_id)["online"] == 0, what="will -> offline")
    # The hub comes back in session 2; the broker's late will of session 1 must not win.
    back = SimHub(h.hub_id, h.vars, central.broker, session=2)
    back.start()
    try:
        wait_for(lambda: central.hub_row(h.hub_id)["session"] == "2", what="session 2")
        back.session = 1
        back.publish("state", back.state(False, ts=time.time() - 60), retain=True)
        back.seq = h.seq  # seq is kept across restarts
        back.health(1)
        wait_for(lambda: central.hub_row(h.hub_id)["last_seq"] == 2, what="marker")
        assert central.ingest.ingestor.counters.stale_states >= 1
        assert central.hub_row(h.hub_id)["online"] == 1
    finally:
        back.close()


def test_gap_in_seq_is_recorded(central: Central) -> None:
    h = central.hubs["tg-lome-ecole-02"]
    h.health(2)
    h.seq += 3  # samples 3..5 lost on the hub (e.g. outbox budget)
    h.health(1)
    wait_for(lambda: central.hub_row(h.hub_id)["last_seq"] == 6, what="sample 6")
    assert registry.open_gaps(central.db)[(h.hub_id, "health")] == [(3, 5)]


def chromium() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


def test_fleet_page_renders_in_chromium(central: Central) -> None:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium not installed")
    for h in central.hubs.values():
        h.health(4)
    central.hubs["tg-sokode-csps-01"].vanish()
    wait_for(lambda: central.hub_row("tg-sokode-csps-01")["online"] == 0, what="one offline")
    ARTIFACTS.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{central.web_port}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    dom = subprocess.run(
        [exe, *flags, "--dump-dom", base + "/"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "<svg" in dom and "Map of Togo" in dom
    assert dom.count("<circle") >= 3 + 4  # 3 hubs + the legend
    for hub in HUBS:
        assert f"/hubs/{hub.id}" in dom
    assert "offline" in dom and "41 %" in dom  # English: chromium asks for en-US
    shot = ARTIFACTS / "fleet.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [exe, *flags, "--window-size=1400,900", f"--screenshot={shot}", base + "/"],
        capture_output=True,
        timeout=60,
    )
    assert shot.exists() and shot.stat().st_size > 20_000
    hub_shot = ARTIFACTS / "fleet-hub.png"
    subprocess.run(
        [
            exe,
            *flags,
            "--window-size=1200,900",
            f"--screenshot={hub_shot}",
            base + "/hubs/tg-kara-ecole-01",
        ],
        capture_output=True,
        timeout=60,
    )
    assert hub_shot.exists()
    hub_dom = subprocess.run(
        [exe, *flags, "--dump-dom", base + "/hubs/tg-kara-ecole-01"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "<polyline" in hub_dom and "CPU" in hub_dom


AGENT = """
import asyncio, signal, sys
from hub_agent.config import load_config
from hub_agent.configsync import ConfigSync
from hub_agent.telemetry.service import Telemetry

async def main():
    cfg = load_config(sys.argv[1])
    tel = Telemetry(cfg, probe=None, interval_s=0.2)
    ConfigSync(cfg, apply=lambda new: None, telemetry=tel)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await tel.start()
    await stop.wait()
    await tel.stop()

asyncio.run(main())
"""


@pytest.mark.skipif(
    importlib.util.find_spec("hub_agent.configsync") is None
    or importlib.util.find_spec("hub_agent.telemetry.service") is None,
    reason="the agent's telemetry/config sync are not in this tree",
)
def test_real_agent_with_enrolled_config_goes_online_and_applies_a_push(
    central: Central, tmp_path: Path
) -> None:
    """The config enroll produced, installed as is on the real agent's telemetry and
    config sync: it shows online with health, and a group push is applied by it."""
    hub_id = "tg-lome-ecole-02"
    central.hubs[hub_id].close()
    hv = yaml.safe_load(central.state.host_vars_path(hub_id).read_text())
    doc = dict(hv["relais_hub_config"])
    doc["data_dir"] = str(tmp_path / "agent")
    cfg_file = tmp_path / "hub.yaml"
    cfg_file.write_text(yaml.safe_dump(doc, allow_unicode=True))
    env = dict(os.environ)
    env.pop("RELAIS_MQTT_URL", None)
    env.pop("RELAIS_DATA_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(cfg_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: (
                (central.hub_row(hub_id)["last_seq"] or 0) >= 3
                and central.hub_row(hub_id)["agent_version"] not in (None, "test")
            ),
            timeout=20,
            what="the real agent's samples",
        )
        row = central.hub_row(hub_id)
        assert row["online"] == 1
        assert json.loads(row["last_health"]).get("cpu") is not None
        f = tmp_path / "pilot.yaml"
        f.write_text("groups:\n  pilot:\n    free_tier: {daily_mb: 250}\n")
        r = central.hubctl("push", "--group", "pilot", str(f), "--timeout", "15")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 applied" in r.stdout
        active = json.loads((tmp_path / "agent" / "config" / "active.json").read_text())
        assert "250" in json.dumps(active)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0, out


def test_shared_member_ingests_through_the_enrolled_acl(central: Central, tmp_path: Path) -> None:
    """The controller user's ACL lets a $share member subscribe (scale-out path)."""
    db_path = tmp_path / "member.db"
    user, password = central.state.controller_credentials()
    url = BrokerUrl.parse(central.broker.url).with_credentials(user, password)
    member = Ingest(db_path, url, shared=True, client_id="member-1", summary_every_s=0.1)
    member.start()
    try:
        h = central.hubs["tg-kara-ecole-01"]
        h.health(5)
        wait_for(
            lambda: registry.seq_counts(registry.open_registry(db_path)).get(h.hub_id) == (5, 1, 5),
            timeout=30,  # 10 s was not enough at load 50
            what="the shared member's samples",
        )
    finally:
        member.stop()


def _retained(central: Central, topic: str) -> list[bytes]:
    user, password = central.state.controller_credentials()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    got: list[bytes] = []
    c.on_message = lambda cl, u, msg: got.append(bytes(msg.payload)) if msg.retain else None
    c.connect(central.broker.host, central.broker.port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    time.sleep(1.0)
    c.disconnect()
    c.loop_stop()
    return got


def test_remove_revokes_a_hub_forgets_it_and_clears_its_topics(
    central: Central, tmp_path: Path
) -> None:
    gone, kept = central.hubs["tg-kara-ecole-01"], central.hubs["tg-lome-ecole-02"]
    f = tmp_path / "layer.yaml"
    f.write_text("defaults: {free_tier: {daily_mb: 150}}\n")
    central.hubctl("push", gone.hub_id, str(f), "--timeout", "3")  # leaves a retained config
    assert _retained(central, topics.desired(gone.hub_id)), "a retained config to clear"
    password = gone.vars["relais_mqtt_password"]
    gone.close()

    r = central.hubctl("remove", gone.hub_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broker user revoked" in r.stdout and "cleared" in r.stdout
    assert registry.get_hub(central.db, gone.hub_id) is None
    assert registry.get_hub(central.db, kept.hub_id) is not None
    assert not central.state.host_vars_path(gone.hub_id).exists()
    acl = central.state.acl_path.read_text()
    assert f"user {gone.hub_id}" not in acl and f"user {kept.hub_id}" in acl
    assert _retained(central, topics.desired(gone.hub_id)) == []
    # the broker with the new files (what central.yaml's broker_reload does in production)
    use_enrolled_files(central.broker, central.state)
    central.broker.restart()
    assert _connect_as(central, gone.hub_id, password).is_failure
    assert not _connect_as(central, kept.hub_id, kept.vars["relais_mqtt_password"]).is_failure
    again = central.hubctl("remove", gone.hub_id, "--offline")
    assert again.returncode == 0 and "already removed" in again.stdout
