"""Small files that must survive a power cut: write to a temp file, fsync, rename, fsync dir."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never half.

    ``durable=False`` skips the fsyncs (a status file rewritten every few seconds need not
    wear the flash; after a power cut it is simply a little old)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, obj: Any, mode: int = 0o600, durable: bool = True) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode(), mode, durable)


def read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist or is not JSON."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class Counter:
    """A persisted counter (the MQTT session number): every ``next()`` is on disk first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def current(self) -> int:
        data = read_json(self.path)
        return int(data["value"]) if isinstance(data, dict) and "value" in data else 0

    def next(self) -> int:
        with self._lock:
            value = self.current() + 1
            write_json(self.path, {"value": value}, mode=0o644)
            return value
