"""Offline Wikipedia: kiwix-serve (Debian kiwix-tools) over the library's ZIM files.

It listens on loopback only; nginx proxies /wiki/ to it, so phones reach it on the same
zero-rated port as the files. It is restarted whenever the set of ready ZIMs changes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hub_agent.children import stop_child

URL_ROOT = "/wiki"


def kiwix_binary() -> str | None:
    return shutil.which("kiwix-serve")


def kiwix_command(binary: str, zims: Sequence[Path], port: int) -> list[str]:
    return [
        binary,
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--urlRootLocation",
        URL_ROOT,
        "--threads",
        "2",
        *[str(z) for z in sorted(zims)],
    ]


class KiwixServer:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.zims: tuple[Path, ...] = ()

    @staticmethod
    def available() -> bool:
        return kiwix_binary() is not None

    def ensure(self, zims: Sequence[Path]) -> bool:
        """Serve exactly ``zims`` (none: stopped). True when it (re)started or stopped."""
        want = tuple(sorted(zims))
        alive = self.proc is not None and self.proc.poll() is None
        if want == self.zims and (alive or not want):
            return False
        self.stop()
        self.zims = want
        binary = kiwix_binary()
        if not want or binary is None:
            return True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                kiwix_command(binary, want, self.port),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_child(self.proc)
        self.proc = None
