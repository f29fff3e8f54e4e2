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
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from hub_agent.config import validate_config
from hub_agent.mqtt.client import Client as MqttClient
from hub_agent.mqtt.core import BrokerUrl, ConnectFailed
from hub_agent.telemetry.service import status_path
from lab.broker import mosquitto_path
from lab.netns import UPSTREAM, Lab, run
from provisioning.pushplan import deep_merge
from provisioning.statedir import StateDir
from tests.conftest import require_lab, require_mosquitto

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HUB = "tg-lab-rot-a"
PORT = 1883
T = TypeVar("T")


def wait_for(
    what: str, pred: Callable[[], T | None], timeout: float = 60, why: Callable[[], str] = str
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{why()}")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


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
class RotLab:
    lab: Lab
    root: Path
    link: str
    ctl_ip: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[RotLab]:
        lab = Lab.create(clients=0, nat=False, http=False)
        root = Path(tempfile.mkdtemp(prefix="relais-rotlab-"))
        os.chmod(root, 0o755)  # the broker (user mosquitto) reads its files below
        octet = 100 + secrets.randbelow(100)
        rl = cls(lab, root, f"rlr{lab.run_id.replace('-', '')[-8:]}"[:15], f"169.254.{octet}.2")
        try:
            # the test (the centre) reaches the broker in the upstream namespace over a veth
            run(["ip", "link", "add", rl.link, "type", "veth", "peer", "name", "ctlr",
                 "netns", lab.upstream_ns])  # fmt: skip
            run(["ip", "addr", "add", f"169.254.{octet}.1/30", "dev", rl.link])
            run(["ip", "link", "set", rl.link, "up"])
            lab.ip(lab.upstream_ns, "addr", "add", f"{rl.ctl_ip}/30", "dev", "ctlr")
            lab.ip(lab.upstream_ns, "link", "set", "ctlr", "up")
            rl.settings(reload=False)
            rl.hubctl("enroll", HUB, "--kind", "mairie", "--name", "Lab rotation")
            rl._start_broker()
            rl.settings(reload=True)
            yield rl
        finally:
            rl.close()

    @property
    def central(self) -> Path:
        return self.root / "central"

    @property
    def bdir(self) -> Path:
        return self.root / "broker"

    @property
    def config_path(self) -> Path:
        return self.root / "hub" / "hub.yaml"

    def hubctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [str(BIN / "hubctl"), "--state", str(self.central), *args],
            capture_output=True, text=True, timeout=300, env=_env(),
        )  # fmt: skip
        if check and p.returncode != 0:
            raise AssertionError(f"hubctl {' '.join(args)}: {p.stdout}\n{p.stderr}")
        return p

    def settings(self, reload: bool) -> None:
        """central.yaml; ``reload``: hubctl hands the broker its files and reloads it (else
        the broker keeps the users it had: a new password it does not know)."""
        self.central.mkdir(mode=0o700, exist_ok=True)
        doc: dict[str, Any] = {
            "hub_mqtt_url": f"mqtt://{UPSTREAM}:{PORT}",
            "controller_mqtt_url": f"mqtt://{self.ctl_ip}:{PORT}",
        }
        if reload and "broker" in self.procs:
            owner = "-o mosquitto -g mosquitto" if _has_user("mosquitto") else ""
            src, dst = self.central / "mosquitto", self.bdir
            copy = " && ".join(
                f"install -m 0600 {owner} {src / f} {dst / f}" for f in ("passwd", "acl")
            )
            doc["broker_reload"] = ["sh", "-c", f"{copy} && kill -HUP {self.procs['broker'].pid}"]
        (self.central / "central.yaml").write_text(yaml.safe_dump(doc))

    def _start_broker(self) -> None:
        exe = mosquitto_path()
        assert exe
        (self.bdir / "data").mkdir(parents=True)
        for f in ("passwd", "acl"):
            shutil.copy(self.central / "mosquitto" / f, self.bdir / f)
        (self.bdir / "mosquitto.conf").write_text("\n".join([
            f"listener {PORT}", "allow_anonymous false",
            f"password_file {self.bdir / 'passwd'}", f"acl_file {self.bdir / 'acl'}",
            "persistence true", f"persistence_location {self.bdir / 'data'}/",
            "max_inflight_messages 1000", "log_dest stdout", "log_type all", "",
        ]))  # fmt: skip
        if _has_user("mosquitto"):
            ent = pwd.getpwnam("mosquitto")
            for p in [self.bdir, *self.bdir.rglob("*")]:
                os.chown(p, ent.pw_uid, ent.pw_gid)
        self.procs["broker"] = self.lab.spawn(
            self.lab.upstream_ns, exe, "-c", str(self.bdir / "mosquitto.conf"), log="broker.log"
        )
        self.lab.wait_port(self.lab.upstream_ns, UPSTREAM, PORT)

    def host_vars(self) -> dict[str, Any]:
        path = self.central / "ansible" / "host_vars" / f"{HUB}.yml"
        data: dict[str, Any] = yaml.safe_load(path.read_text())
        return data

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
        doc = deep_merge(self.host_vars()["relais_hub_config"], self.local())
        hub_dir = self.config_path.parent
        (hub_dir / "run").mkdir(parents=True)
        validate_config(doc, source="rotation lab hub config")
        self.config_path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.procs["agent"] = p = self.lab.spawn(
            self.lab.hub_ns, str(BIN / "hub-agent"), "run", "--config", str(self.config_path),
            log="agent.log",
        )  # fmt: skip
        sock = hub_dir / "run" / "agent.sock"
        wait_for("agent socket", lambda: p.poll() is None and sock.exists(), 60)
        return p

    def client(self, user: str, password: str, on_message: Any = None) -> MqttClient:
        url = BrokerUrl.parse(f"mqtt://{self.ctl_ip}:{PORT}").with_credentials(user, password)
        c = MqttClient(url, on_message=on_message)
        c.connect()
        return c

    def hub_status(self) -> dict[str, Any]:
        """`hub-agent status --json`, as the caretaker runs it."""
        p = subprocess.run(
            [str(BIN / "hub-agent"), "status", "--config", str(self.config_path), "--json"],
            capture_output=True, text=True, timeout=60, env=_env(),
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        data: dict[str, Any] = json.loads(p.stdout)
        return data

    def log(self, name: str) -> str:
        p = self.lab.workdir / name
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def close(self) -> None:
        for name in ("agent", "broker"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        self.lab.hub_exec("nft", "delete", "table", "inet", "relais")
        self.lab.close()
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


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
        old_password = rl.host_vars()["relais_mqtt_password"]
        ctl_user, ctl_password = StateDir(rl.central).controller_credentials()
        seen = Seen()
        watch = rl.client(ctl_user, ctl_password, on_message=seen.on_message)
        watch.subscribe([f"relais/hubs/{HUB}/health", f"relais/hubs/{HUB}/state"])
        agent = rl.start_agent()
        wait_for("first samples", lambda: len(seen.seqs) >= 3, 60)
        local = rl.root / "local.yaml"
        local.write_text(yaml.safe_dump(rl.local()))
        rl.hubctl("push", HUB, str(local), "--timeout", "90")  # the registry's copy matches
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
            rl.client(HUB, old_password).close()
        assert agent.poll() is None and rl.procs["agent"].pid == agent.pid
        assert (
            json.loads(status_path(rl.config_path.parent / "data").read_text())["pid"] == agent.pid
        )
        wait_for("every seq from 1 at the centre", seen.complete, 30)
        new_password = (StateDir(rl.central).read_secret(HUB) or {})["mqtt_password"]
        for secret in (old_password, new_password):
            assert secret not in rl.log("agent.log")
        watch.close()
