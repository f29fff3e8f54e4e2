"""Shared helpers for the content cache's lab tests (hub namespace, upstream files)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.lab.netns import UPSTREAM, Lab

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
