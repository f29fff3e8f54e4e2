"""Stopping the helper daemons the agent starts itself (dnsmasq, nginx, kiwix-serve), and
whether a process recorded by its pid is still there."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_child(
    proc: subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    *,
    group: bool = False,
    grace_s: float = 5.0,
) -> None:
    """Ask ``proc`` to stop with ``sig`` (its whole process group when ``group``), and kill
    it if it is still there after ``grace_s``; returns once it is reaped."""

    def send(s: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, s)
            else:
                proc.send_signal(s)

    send(sig)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=grace_s)


def pid_alive(pid: Any) -> bool:
    """True when ``pid`` (read from a file: anything) names a live process, ours or not."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
