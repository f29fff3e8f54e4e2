"""The demo's processes: each in its own process group logging to ``<state>``, recorded
with its start time so a later ``stop`` kills only what the demo started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.demo_config import CTL_LINK, PROCS, ROOT, STATE, shown


class DemoError(RuntimeError):
    pass


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed supervisor may wait a while to be reaped)."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process,
    so a pid recorded before a reboot or long ago is never mistaken for the demo's."""
    st = _stat(pid)
    return st[19] if st is not None and len(st) > 19 else None


def same_process(pid: int, start: str | None) -> bool:
    return alive(pid) and start is not None and started(pid) == start


def clean_env() -> dict[str, str]:
    # RELAIS_* overrides would silently change the demo's configs (RELAIS_MQTT_URL above all).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run(cmd: Sequence[str], ns: str | None = None, timeout: float = 60) -> str:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    p = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=ROOT
    )
    if p.returncode != 0:
        raise DemoError(f"{' '.join(cmd[:3])} ... failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def wait_until(what: str, pred: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise DemoError(f"{what}: not ready after {timeout:.0f}s (see {shown(STATE)}/*.log)")


@dataclass
class Supervisor:
    """The demo's own processes, each in its own process group, logging to ``<state>``."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    def spawn(self, name: str, cmd: Sequence[str], ns: str | None = None) -> None:
        full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
        with open(STATE / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                full,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=clean_env(),
                cwd=ROOT,
            )
        self.record()

    def check(self, name: str) -> bool:
        """False while ``name`` runs; raises with its log's tail once it has exited."""
        p = self.procs[name]
        if p.poll() is not None:
            tail = (STATE / f"{name}.log").read_text(errors="replace")[-2000:]
            raise DemoError(f"{name} exited ({p.returncode}):\n{tail}")
        return False

    def record(self) -> None:
        data = {
            "pids": {n: [p.pid, started(p.pid)] for n, p in self.procs.items()},
            "namespaces": self.namespaces,
            "link": CTL_LINK,
        }
        tmp = PROCS.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(PROCS)

    def stop_all(self) -> None:
        # Reverse start order: the portal before the agent, the broker last.
        for p in reversed(list(self.procs.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(list(self.procs.values())):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        self.procs.clear()


def listening(ns: str | None, port: int) -> bool:
    cmd = ["ss", "-Htln"]
    out = subprocess.run(
        ["ip", "netns", "exec", ns, *cmd] if ns else cmd, capture_output=True, text=True
    ).stdout
    return any(f":{port} " in line + " " for line in out.splitlines())


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False
