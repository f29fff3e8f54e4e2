"""Broker credential rotation on a running hub, for real: `hubctl enroll` and `hubctl rotate`
against Mosquitto with the password file and ACL they write, and `hub-agent run` in the
lab's hub namespace. The agent is never restarted (same PID) and no health sample is lost.

1. A rotation the broker does not know yet (its reload left out): the hub keeps the
   previous user and says so; `hubctl rotate` keeps the old user and exits 1.
2. The rotation again, the broker reloaded: the hub moves to the new user, and the old user
   is retired: it can no longer connect.
"""

from __future__ import annotations

import contextlib
import json
import pwd
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from hub_agent.config import validate_config
from hub_agent.mqtt.client import Client as MqttClient
from hub_agent.mqtt.core import ConnectFailed
from hub_agent.telemetry.service import status_path
from lab.centre import BIN, CentreLab, process_env, wait_for
from lab.netns import UPSTREAM, Lab
from provisioning.pushplan import deep_merge
from provisioning.statedir import StateDir
from tests.conftest import require_lab, require_mosquitto

pytestmark = pytest.mark.root

HUB = "tg-lab-rot-a"


@dataclass
class Seen:
    """What the centre sees of the hub: health seqs and the latest state."""

    seqs: set[int] = field(default_factory=set)
    state: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        msg = json.loads(payload) if payload else {}
        with self.lock:
            if topic.endswith("/health"):
                self.seqs.add(int(msg["seq"]))
            elif topic.endswith("/state"):
                self.state = msg

    def complete(self) -> bool:
        with self.lock:
            return bool(self.seqs) and self.seqs == set(range(1, max(self.seqs) + 1))


@dataclass
class RotLab(CentreLab):
    TAG = "r"

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[RotLab]:
        rl = cls(Lab.create(clients=0, nat=False, http=False))
        try:
            rl.attach_centre()
            rl.settings(reload=False)
            rl.hubctl("enroll", HUB, "--kind", "mairie", "--name", "Lab rotation")
            rl.start_broker()
            rl.settings(reload=True)
            yield rl
        finally:
            rl.close()

    def settings(self, reload: bool) -> None:
        """central.yaml; ``reload``: hubctl hands the broker its files and reloads it (else
        the broker keeps the users it had: a new password it does not know)."""
        if not (reload and "broker" in self.procs):
            self.central_settings()
            return
        owner = "-o mosquitto -g mosquitto" if _has_user("mosquitto") else ""
        src, dst = self.central / "mosquitto", self.broker_dir
        copy = " && ".join(
            f"install -m 0600 {owner} {src / f} {dst / f}" for f in ("passwd", "acl")
        )
        self.central_settings(
            broker_reload=["sh", "-c", f"{copy} && kill -HUP {self.procs['broker'].pid}"]
        )

    def local(self) -> dict[str, Any]:
        """What this lab's hub has of its own (paths in the temp dir, a sample a second):
        in its config file and pushed by the centre, so later pushes keep it."""
        hub_dir = self.config_path.parent
        return {
            "data_dir": str(hub_dir / "data"),
            "portal": {"agent_socket": str(hub_dir / "run" / "agent.sock")},
            "staff": {"devices": []},
            "network": {"wan": {"dns_servers": [UPSTREAM]}},
            "mqtt": {"telemetry_interval_s": 1},
        }

    def start_agent(self) -> subprocess.Popen[bytes]:
        """The hub's config from its host_vars (and what is its own), then its agent."""
        doc = deep_merge(self.host_vars(HUB)["relais_hub_config"], self.local())
        (self.config_path.parent / "run").mkdir(parents=True)
        validate_config(doc, source="rotation lab hub config")
        self.config_path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return super().start_agent()

    def start_watched(self) -> tuple[Seen, MqttClient, subprocess.Popen[bytes]]:
        """The centre watching the hub's health and state, the hub's agent until its first
        samples, then its own settings pushed (the registry's copy matches)."""
        seen = Seen()
        watch = self.mqtt(on_message=seen.on_message)  # as the controller
        watch.subscribe([f"relais/hubs/{HUB}/health", f"relais/hubs/{HUB}/state"])
        agent = self.start_agent()
        wait_for("first samples", lambda: len(seen.seqs) >= 3, 60)
        local = self.root / "local.yaml"
        local.write_text(yaml.safe_dump(self.local()))
        self.hubctl("push", HUB, str(local), "--timeout", "90")
        return seen, watch, agent

    def hub_status(self) -> dict[str, Any]:
        """`hub-agent status --json`, as the caretaker runs it."""
        p = subprocess.run(
            [str(BIN / "hub-agent"), "status", "--config", str(self.config_path), "--json"],
            capture_output=True, text=True, timeout=60, env=process_env(),
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        data: dict[str, Any] = json.loads(p.stdout)
        return data


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _live_mqtt(rl: RotLab) -> dict[str, Any] | None:
    live = json.loads(status_path(rl.config_path.parent / "data").read_text())
    return live.get("mqtt") if live.get("connected") else None


def test_rotating_a_running_hubs_credentials_without_a_restart() -> None:
    require_lab()
    require_mosquitto()
    with RotLab.running() as rl:
        old_password = rl.host_vars(HUB)["relais_mqtt_password"]
        seen, watch, agent = rl.start_watched()
        assert seen.state.get("user") == HUB and seen.state.get("credential") == "new"

        # 1. The broker does not know the new password: the hub stays on the previous user.
        rl.settings(reload=False)
        r = rl.hubctl("rotate", HUB, "--timeout", "90", check=False)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"{HUB} kept" in r.stderr and "previous credential" in r.stderr, r.stderr
        logs = lambda: rl.log("agent.log") + rl.log("broker.log")  # noqa: E731
        previous = {"user": HUB, "credential": "previous"}
        wait_for("status: on the previous user", lambda: _live_mqtt(rl) == previous, 30, logs)
        status = rl.hub_status()["broker"]
        assert status["mqtt"] == previous
        n = max(seen.seqs)
        wait_for("samples after the refused rotation", lambda: max(seen.seqs) > n + 3, 60, logs)

        # 2. Again, the broker reloaded: the hub moves to the new user; the old one retires.
        rl.settings(reload=True)
        r = rl.hubctl("rotate", HUB, "--timeout", "120", check=False)
        assert r.returncode == 0, (r.stdout, r.stderr, rl.log("agent.log"))
        assert f"previous broker user {HUB} retired" in r.stdout, r.stdout
        assert seen.state.get("user") == f"{HUB}.alt" and seen.state.get("credential") == "new"
        new = {"user": f"{HUB}.alt", "credential": "new"}
        wait_for("status: on the new user", lambda: _live_mqtt(rl) == new, 30, logs)
        n = max(seen.seqs)
        wait_for("samples after the rotation", lambda: max(seen.seqs) > n + 3, 60, logs)

        # The retired user is refused; the agent was never restarted; no sample lost.
        with pytest.raises(ConnectFailed, match="refused"):
            rl.mqtt(HUB, old_password).close()
        assert agent.poll() is None and rl.procs["agent"].pid == agent.pid
        assert (
            json.loads(status_path(rl.config_path.parent / "data").read_text())["pid"] == agent.pid
        )
        wait_for("every seq from 1 at the centre", seen.complete, 30)
        new_password = (StateDir(rl.central).read_secret(HUB) or {})["mqtt_password"]
        for secret in (old_password, new_password):
            assert secret not in rl.log("agent.log")
        watch.close()
