"""Stopping the helper daemons the agent starts itself (dnsmasq, nginx, kiwix-serve)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


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
