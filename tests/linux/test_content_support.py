"""Shared helpers for the content cache's lab tests (hub namespace, upstream files)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

from lab.netns import HUB_LAN, UPSTREAM, Client, Lab

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hub.yaml"
PY = sys.executable


def put_upstream(lab: Lab, name: str, data: bytes) -> str:
    (lab.www_root / name).write_bytes(data)
    return f"http://{UPSTREAM}/{name}"


def item(
    item_id: str, url: str, data: bytes, pinned: bool = False, kind: str = "video", **kw: Any
) -> dict[str, Any]:
    return {
        "id": item_id,
        "title": {"fr": f"Titre {item_id}", "en": f"Title {item_id}"},
        "kind": kind,
        "url": url,
        "size": len(data),
        "sha256": kw.pop("sha256", hashlib.sha256(data).hexdigest()),
        "priority": "pinned" if pinned else "normal",
        **kw,
    }


def write_config(tmp: Path, items: list[dict[str, Any]], **content: Any) -> Path:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["data_dir"] = str(tmp / "data")
    cfg["content"].update({"sync_window": "00:00-00:00", "bandwidth_kbit": 16000})
    cfg["content"].update(content)
    cfg["content"]["items"] = items
    path = tmp / "hub.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def sync_args(config: Path, *extra: str) -> list[str]:
    return [PY, "-m", "hub_agent.content", "sync", "--config", str(config), *extra]


def run_sync(lab: Lab, config: Path, *extra: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Run the sync in the hub namespace; return the events it emitted."""
    p = subprocess.run(
        ["ip", "netns", "exec", lab.hub_ns, *sync_args(config, *extra)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return events(p.stdout)


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def upstream_sent(lab: Lab) -> int:
    out = lab.hub_exec("curl", "-sS", "--max-time", "5", f"http://{UPSTREAM}/stats").stdout
    return int(json.loads(out)["bytes"])


def report(config: Path) -> dict[str, Any]:
    p = subprocess.run(
        [PY, "-m", "hub_agent.content", "report", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    data = json.loads(p.stdout)
    assert isinstance(data, dict)
    return data


def states(config: Path) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in report(config)["items"]}


def wait_for(pred: Any, timeout: float = 20, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def library_dir(tmp: Path) -> Path:
    return tmp / "data" / "content"


def serve_args(config: Path, *extra: str) -> list[str]:
    return [
        PY, "-m", "hub_agent.content", "serve", "--config", str(config),
        "--listen", f"{HUB_LAN}:8081", "--nginx-user", "root", "--retry-base", "0.3", *extra,
    ]  # fmt: skip


class Serving:
    """``python -m hub_agent.content serve`` in the hub namespace, stopped with SIGTERM."""

    def __init__(self, lab: Lab, config: Path, log: str = "serve.log") -> None:
        self.lab = lab
        self.proc = lab.spawn(lab.hub_ns, *serve_args(config), log=log)
        self.log = lab.workdir / log
        lab.wait_port(lab.hub_ns, HUB_LAN, 8081)

    def events(self) -> list[dict[str, Any]]:
        return events(self.log.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def curl(client: Client, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return client.curl(f"http://{HUB_LAN}:8081{path}", *args, timeout=20)


def make_zim(folder: Path, text: str) -> bytes:
    """A tiny real ZIM (zimwriterfs, Debian zim-tools) with one article holding ``text``."""
    html = folder / "zimsrc"
    html.mkdir(parents=True, exist_ok=True)
    (html / "index.html").write_text(
        f"<html><head><title>Togo</title></head><body><p>{text}</p></body></html>"
    )
    (html / "icon.png").write_bytes(_png(48, 48))
    out = folder / "wiki.zim"
    subprocess.run(
        ["zimwriterfs", "-w", "index.html", "-I", "icon.png", "-l", "fra", "-t", "Wiki test",
         "-d", "test", "-c", "relais", "-p", "relais", "-n", "wiki-test", str(html), str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


def _png(w: int, h: int) -> bytes:
    raw = b"".join(b"\x00" + b"\x0b\x6e\x4f" * w for _ in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + (chunk(b"IEND", b""))
    )
