"""``hub-agent vouchers issue``: codes printed are stored and accepted at login."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hub_agent.sessions.cli import issue_vouchers_command
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService
from tests.unit.test_sessions_service import make_config


def _config_file(tmp_path: Path) -> Path:
    data = make_config(tmp_path).to_wire()
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_issue_prints_codes_that_log_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAIS_DATA_DIR", raising=False)
    cfg = _config_file(tmp_path)
    assert issue_vouchers_command(cfg, "jour", 3, as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"] == "jour" and out["devices_per_voucher"] == 2 and len(out["codes"]) == 3
    assert issue_vouchers_command(cfg, "heure", 2, as_json=False) == 0
    plain = capsys.readouterr().out.split()
    assert len(plain) == 2 and all(len(c) == 14 and c.count("-") == 2 for c in plain)
    svc = SessionService(make_config(tmp_path), open_sessions_db(tmp_path / "hub.db"))
    view, err = svc.login("02:00:00:00:00:01", None, "voucher", out["codes"][0], 1.78e9)
    assert err is None and view is not None and view.plan_id == "jour"
    assert svc.login("02:00:00:00:00:02", None, "voucher", plain[1], 1.78e9)[1] is None


def test_bad_arguments_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAIS_DATA_DIR", raising=False)
    cfg = _config_file(tmp_path)
    assert issue_vouchers_command(cfg, "semaine", 3, as_json=False) == 2
    assert "--plan" in capsys.readouterr().err
    assert issue_vouchers_command(cfg, "heure", 0, as_json=False) == 2
    assert "--count" in capsys.readouterr().err
    assert issue_vouchers_command(tmp_path / "nope.yaml", "heure", 1, as_json=False) == 2
    assert "cannot read" in capsys.readouterr().err
