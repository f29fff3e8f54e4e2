"""`hub-agent status`: read from the status file, the outbox and the config store."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from hub_agent.config import load_config
from hub_agent.configsync import ConfigStore
from hub_agent.status import gather_status, render_text, status_command
from hub_agent.store import open_db
from hub_agent.telemetry import db_path
from hub_agent.telemetry.files import write_json
from hub_agent.telemetry.outbox import OUTBOX, Outbox
from hub_agent.telemetry.service import status_path


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "hub.yaml"
    doc = {
        "version": 3,
        "hub": {"id": "hub-a", "kind": "school", "name": "École"},
        "data_dir": str(tmp_path / "data"),
        "portal": {"login_methods": ["free"]},
        "mqtt": {"url": "mqtt://hub-a:secret-pw@127.0.0.1:1883"},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_status_without_a_running_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    assert status_command(path, as_json=True) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["agent_running"] is False and st["broker"]["connected"] is False
    assert st["outbox"] == {"health": 0, "event": 0, "oldest_queued_ts": None}
    assert st["config"]["version"] == 3 and st["config"]["source"] == "local file"


def test_status_reports_connection_outbox_and_last_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    cfg = load_config(path, env={})
    box = Outbox(open_db(db_path(cfg.data_dir), OUTBOX), "hub-a", 1 << 20)
    t0 = time.time() - 7200
    for i in range(5):
        box.put("health", {"i": i}, ts=t0 + i)
    box.put("event", {"type": "uplink_lost"})
    now = time.time()
    write_json(
        status_path(cfg.data_dir),
        {"pid": os.getpid(), "updated": now, "interval_s": 60, "connected": True,
         "connected_since": now - 30, "session": 12, "last_error": None,
         "uplink_up": True, "last_probe": {"lat": 42.0, "loss": 0.0}},
    )  # fmt: skip
    ConfigStore(cfg.data_dir).save_result(
        {"version": 4, "status": "rolled_back", "reason": "apply failed: boom", "ts": now}
    )
    st = gather_status(cfg, now)
    assert st["agent_running"] and st["broker"]["connected"] and st["broker"]["session"] == 12
    assert st["outbox"]["health"] == 5 and st["outbox"]["event"] == 1
    assert st["outbox"]["oldest_queued_ts"] == pytest.approx(t0)
    text = render_text(st, now)
    assert "5 samples, 1 events queued; oldest 2 h ago" in text
    assert "v4 rolled_back (apply failed: boom)" in text
    assert "connected since 30 s ago (session 12)" in text
    assert status_command(path, as_json=False) == 0
    assert "secret-pw" not in capsys.readouterr().out


def test_a_stale_status_file_means_the_agent_is_not_running(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path), env={})
    write_json(
        status_path(cfg.data_dir),
        {"pid": os.getpid(), "updated": time.time() - 3600, "connected": True},
    )
    st = gather_status(cfg)
    assert st["agent_running"] is False and st["broker"]["connected"] is False
    assert "unknown (agent not running)" in render_text(st)


def test_an_unreadable_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\n")
    assert status_command(bad, as_json=False) == 2
    assert "version" in capsys.readouterr().err


def test_an_unreadable_database_is_reported_not_shown_as_empty(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path), env={})
    db_file = db_path(cfg.data_dir)
    db_file.parent.mkdir(parents=True)
    db_file.write_bytes(b"this is not a database" * 100)
    st = gather_status(cfg)
    assert st["outbox"]["health"] is None and "not a database" in st["outbox"]["error"]
    assert "cannot read the database" in render_text(st)
