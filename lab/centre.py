"""The centre's side of a lab, shared by lab/paylab.py and tests/linux/test_rotation_lab.py:

    this machine (the centre: hubctl, the test's MQTT clients)
        │ veth, link-local /30 (``ctl_ip`` is the upstream end)
    upstream ns: Mosquitto :1883, started from the password file and ACL that the real
                 ``hubctl enroll`` wrote under ``central/mosquitto``

Also ``hubctl`` on the central state dir, the hub's agent in the hub namespace, the
processes' logs and the teardown. Every wait is on a condition.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from hub_agent.mqtt.client import Client as MqttClient
from hub_agent.mqtt.core import BrokerUrl
from lab.broker import mosquitto_conf, mosquitto_path
from lab.netns import UPSTREAM, Lab, run
from provisioning.statedir import StateDir

ROOT = Path(__file__).resolve().parents[1]  # the checkout: PYTHONPATH of the processes
BIN = Path(sys.executable).parent
MQTT_PORT = 1883
T = TypeVar("T")
# The 169.254.X.0/30 of each centre link, claimed by the lab that uses it (a file per X,
# holding its pid): two labs running side by side (pytest -n 2) once drew the same X, and
# the centre's packets went to the other lab's namespace ("Connection refused").
CLAIMS = Path("/run/relais-lab/centre-links")
OCTETS = range(100, 200)


def claim_octet() -> int:
    """A third octet no running lab uses (a claim whose process is gone is taken over)."""
    CLAIMS.mkdir(parents=True, exist_ok=True)
    for octet in sorted(OCTETS, key=lambda _: secrets.randbelow(1 << 30)):
        path = CLAIMS / str(octet)
        for _ in range(2):  # once more after removing a dead lab's claim
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not _claim_is_stale(path):
                    break
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return octet
    raise RuntimeError(f"no free centre link address (claims in {CLAIMS})")


def _claim_is_stale(path: Path) -> bool:
    try:
        pid = int(path.read_text() or "0")
    except (OSError, ValueError):
        return False  # being written: not stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return pid <= 0


def release_octet(octet: int) -> None:
    path = CLAIMS / str(octet)
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text()) == os.getpid():
            path.unlink()


class Timeout(AssertionError):
    pass


def wait_for(
    what: str,
    pred: Callable[[], T | None],
    timeout: float = 60,
    why: Callable[[], str] = str,
    *,
    every: float = 0.05,
) -> T:
    """``pred()``'s first truthy value; Timeout naming ``what`` (and ``why()``, say the
    logs) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"{what}: not within {timeout:.0f}s\n{why()}".rstrip())
        time.sleep(every)


def process_env() -> dict[str, str]:
    """The environment of the lab's processes: this checkout, none of the caller's
    RELAIS_* settings, logs written as they come."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class CentreLab:
    """``lab`` with the centre attached; subclasses say what else runs (``TAG``: one
    letter naming their veth and temp dir, so two kinds of lab can run side by side)."""

    TAG: ClassVar[str] = "c"
    lab: Lab
    root: Path = field(init=False)
    link: str = field(init=False)  # the veth's end on this machine
    ctl_ip: str = field(init=False)  # the broker as the centre reaches it
    procs: dict[str, subprocess.Popen[bytes]] = field(init=False, default_factory=dict)
    central: Path = field(init=False)  # hubctl's state dir
    broker_dir: Path = field(init=False)
    config_path: Path = field(init=False)  # the hub's config file

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"relais-{self.TAG}lab-"))
        os.chmod(self.root, 0o755)  # the broker (user mosquitto) reads its files below
        self._octet = claim_octet()
        self.link = f"rl{self.TAG}{self.lab.run_id.replace('-', '')[-8:]}"[:15]
        self.ctl_ip = f"169.254.{self._octet}.2"
        self.central = self.root / "central"
        self.broker_dir = self.root / "broker"
        self.config_path = self.root / "hub" / "hub.yaml"

    def attach_centre(self) -> None:
        """The veth from this machine to the upstream namespace."""
        peer = f"ctl{self.TAG}"
        run(["ip", "link", "add", self.link, "type", "veth", "peer", "name", peer,
             "netns", self.lab.upstream_ns])  # fmt: skip
        run(["ip", "addr", "add", f"169.254.{self._octet}.1/30", "dev", self.link])
        run(["ip", "link", "set", self.link, "up"])
        self.lab.ip(self.lab.upstream_ns, "addr", "add", f"{self.ctl_ip}/30", "dev", peer)
        self.lab.ip(self.lab.upstream_ns, "link", "set", peer, "up")

    def central_settings(self, **extra: Any) -> None:
        """central.yaml: the broker as the hubs and as the centre reach it, and ``extra``."""
        self.central.mkdir(mode=0o700, exist_ok=True)
        doc = {
            "hub_mqtt_url": f"mqtt://{UPSTREAM}:{MQTT_PORT}",
            "controller_mqtt_url": f"mqtt://{self.ctl_ip}:{MQTT_PORT}",
            **extra,
        }
        (self.central / "central.yaml").write_text(yaml.safe_dump(doc))

    def hubctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [str(BIN / "hubctl"), "--state", str(self.central), *args],
            capture_output=True, text=True, timeout=300, env=process_env(),
        )  # fmt: skip
        if check and p.returncode != 0:
            raise AssertionError(f"hubctl {' '.join(args)}: {p.stdout}\n{p.stderr}")
        return p

    def host_vars(self, hub_id: str) -> dict[str, Any]:
        """What enroll wrote for the hub's Ansible run (its config, its broker password)."""
        text = (self.central / "ansible" / "host_vars" / f"{hub_id}.yml").read_text()
        data: dict[str, Any] = yaml.safe_load(text)
        return data

    def start_broker(self) -> None:
        """Mosquitto in the upstream namespace with the users and ACL enroll wrote."""
        exe = mosquitto_path()
        assert exe, "mosquitto is not installed"
        bdir = self.broker_dir
        (bdir / "data").mkdir(parents=True)
        for f in ("passwd", "acl"):
            shutil.copy(self.central / "mosquitto" / f, bdir / f)
        conf = mosquitto_conf(bdir, listener=str(MQTT_PORT), anonymous=False, passwords=True,
                              acl=True)  # fmt: skip
        (bdir / "mosquitto.conf").write_text(conf)
        with contextlib.suppress(KeyError):  # no such user: the broker stays root
            ent = pwd.getpwnam("mosquitto")
            for p in [bdir, *bdir.rglob("*")]:
                os.chown(p, ent.pw_uid, ent.pw_gid)
        self.procs["broker"] = self.lab.spawn(
            self.lab.upstream_ns, exe, "-c", str(bdir / "mosquitto.conf"), log="broker.log"
        )
        self.lab.wait_port(self.lab.upstream_ns, UPSTREAM, MQTT_PORT)

    def start_agent(self) -> subprocess.Popen[bytes]:
        """``hub-agent run`` in the hub namespace on ``config_path``, once its socket is up."""
        sock = self.config_path.parent / "run" / "agent.sock"
        sock.unlink(missing_ok=True)
        self.procs["agent"] = p = self.lab.spawn(
            self.lab.hub_ns, str(BIN / "hub-agent"), "run", "--config", str(self.config_path),
            log="agent.log",
        )  # fmt: skip
        wait_for("agent socket", lambda: p.poll() is None and sock.exists(), 60,
                 why=lambda: self.log("agent.log"))  # fmt: skip
        return p

    def mqtt(
        self, user: str | None = None, password: str | None = None, on_message: Any = None
    ) -> MqttClient:
        """A connected client as the controller (default) or as ``user``."""
        if user is None:
            user, password = StateDir(self.central).controller_credentials()
        url = BrokerUrl.parse(f"mqtt://{self.ctl_ip}:{MQTT_PORT}").with_credentials(
            user, password or ""
        )
        c = MqttClient(url, on_message=on_message)
        c.connect()
        return c

    def log(self, name: str) -> str:
        p = self.lab.workdir / name
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def close(self) -> None:
        """Kill every process (last started first), then the namespaces, veth and files."""
        for p in reversed(self.procs.values()):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        self.lab.hub_exec("nft", "delete", "table", "inet", "relais")
        self.lab.close()
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        release_octet(self._octet)
        shutil.rmtree(self.root, ignore_errors=True)
