"""A real Mosquitto broker for tests: own config, free port, users, ACL, stop/restart.

Persistence is on, so a broker restart keeps persistent sessions and queued QoS 1
messages as a production broker does; ``tcp_nodelay`` and a raised inflight window are
set because Mosquitto's defaults throttle a QoS 1 stream to a few dozen messages a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def mosquitto_conf(
    workdir: Path, *, listener: str, anonymous: bool, passwords: bool, acl: bool
) -> str:
    """The one mosquitto config of the lab, the demo and the benches (files in workdir)."""
    lines = [
        f"listener {listener}",
        f"allow_anonymous {'true' if anonymous else 'false'}",
        "persistence true",
        f"persistence_location {workdir / 'data'}/",
        "autosave_interval 1",
        "set_tcp_nodelay true",
        "max_inflight_messages 1000",
        "max_queued_messages 100000",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if passwords:
        lines.append(f"password_file {workdir / 'passwd'}")
    if acl:
        lines.append(f"acl_file {workdir / 'acl'}")
    return "\n".join(lines) + "\n"


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@dataclass
class Broker:
    host: str = "127.0.0.1"
    port: int = 0
    netns: str | None = None  # run inside a lab namespace (e.g. upstream) when set
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="relais-mqtt-")))
    users: dict[str, str] = field(default_factory=dict)
    acl: str | None = None
    allow_anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port() if self.netns is None else 1883
        (self.workdir / "data").mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def url_for(self, user: str) -> str:
        return f"mqtt://{user}:{self.users[user]}@{self.host}:{self.port}"

    def add_user(self, user: str, password: str) -> None:
        self.users[user] = password
        self.allow_anonymous = False
        self._write_passwords()

    def set_acl(self, text: str) -> None:
        self.acl = text
        (self.workdir / "acl").write_text(text)

    def _write_passwords(self) -> None:
        pw = self.workdir / "passwd"
        pw.write_text("")
        for user, password in self.users.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(pw), user, password],
                check=True,
                capture_output=True,
            )
        pw.chmod(0o600)

    def _give_to_broker_user(self) -> None:
        # Run as root, mosquitto drops to its own user; let that user read and write here.
        if os.geteuid() != 0:
            return
        try:
            import pwd

            ent = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        for p in [self.workdir, *self.workdir.rglob("*")]:
            os.chown(p, ent.pw_uid, ent.pw_gid)

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            mosquitto_conf(
                self.workdir,
                listener=f"{self.port} {self.host}",
                anonymous=self.allow_anonymous,
                passwords=bool(self.users),
                acl=self.acl is not None,
            )
        )
        self._give_to_broker_user()
        return conf

    def start(self) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (make test installs it)")
        conf = self._write_config()
        cmd = [exe, "-c", str(conf)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}")
            if self._listening():
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto not listening on {self.port}: {self.log()[-2000:]}")

    def _listening(self) -> bool:
        if self.netns:
            out = subprocess.run(
                ["ip", "netns", "exec", self.netns, "ss", "-Htln"], capture_output=True, text=True
            ).stdout
            return f":{self.port} " in out.replace("\n", " \n")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex((self.host, self.port)) == 0

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves persistence; kill=True is a crash)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """Re-read password file and ACL (SIGHUP), as the controller does after enroll."""
        self._write_config()
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGHUP)
            time.sleep(0.2)

    def log(self) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def close(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
