"""Central vouchers: the secret, batches, the printable sheet, and reconciliation."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import Redemption, SessionService
from hub_agent.sessions.vouchers import format_code, make_central_code, month_index
from provisioning import vouchers
from provisioning.registry import open_registry
from provisioning.statedir import StateDir
from provisioning.voucher_sheet import default_portal_url, hub_cards, render_sheet
from tests.unit.test_sessions_service import make_config

T0 = 1_780_000_000.0


def hub(tmp: Path, name: str, secret: str) -> SessionService:
    cfg = make_config(tmp / name)
    data: dict[str, Any] = cfg.to_wire()
    data["trust"]["voucher_secret"] = secret
    data["hub"]["id"] = name
    return SessionService(type(cfg).model_validate(data), open_sessions_db(tmp / name / "hub.db"))


def test_secret_is_created_once_private(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "central")
    first = vouchers.voucher_secret(state)
    assert vouchers.voucher_secret(state) == first and len(first) >= 40
    mode = stat.S_IMODE(vouchers.secret_path(state).stat().st_mode)
    assert mode == 0o600


def test_issued_codes_work_offline_on_any_hub(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "central")
    db = open_registry(tmp_path / "central" / "registry.db")
    secret = vouchers.voucher_secret(state)
    batch = vouchers.issue_batch(db, secret, vouchers.catalogue()["jour"], 5, T0)
    again = vouchers.issue_batch(db, secret, vouchers.catalogue()["jour"], 5, T0)
    assert len(set(batch.codes) | set(again.codes)) == 10  # serials continue
    h = hub(tmp_path, "tg-a", secret)
    view, err = h.login("02:00:00:00:00:01", None, "voucher", batch.codes[3], T0)
    assert err is None and view is not None and view.plan_id == "jour"


def test_double_redemption_on_two_offline_hubs_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = StateDir(tmp_path / "central")
    db = open_registry(tmp_path / "central" / "registry.db")
    secret = vouchers.voucher_secret(state)
    [one_device, two_devices] = [
        vouchers.issue_batch(db, secret, vouchers.catalogue()[p], 1, T0).codes[0]
        for p in ("heure", "jour")
    ]
    a, b = hub(tmp_path, "tg-a", secret), hub(tmp_path, "tg-b", secret)
    # offline, neither hub knows about the other: both accept
    assert a.login("02:00:00:00:00:01", None, "voucher", one_device, T0)[1] is None
    assert b.login("02:00:00:00:00:02", None, "voucher", one_device, T0 + 60)[1] is None
    # a 2-device code used once on each hub is fine
    assert a.login("02:00:00:00:00:03", None, "voucher", two_devices, T0)[1] is None
    assert b.login("02:00:00:00:00:04", None, "voucher", two_devices, T0)[1] is None
    # a forged code (right secret, serial never issued: a leaked key) is flagged too
    forged = make_central_code(secret.encode(), "heure", month_index(T0) + 5, 9999)
    assert b.login("02:00:00:00:00:05", None, "voucher", forged, T0)[1] is None

    def report(hub: SessionService) -> list[Redemption]:
        # what travels: voucher_redeemed events with a device pseudonym, never the MAC
        events = [r.as_event(secret.encode()) for r in hub.pending_redemptions()]
        assert events and all("02:00" not in str(e) for e in events)
        return [Redemption.from_event(hub.config.hub.id, e) for e in events]

    assert vouchers.reconcile(db, report(a)) == []  # nothing wrong yet
    a.mark_reported(a.pending_redemptions())
    assert a.pending_redemptions() == []
    findings = vouchers.reconcile(db, report(b))
    by_code = {f.code: f for f in findings}
    assert set(by_code) == {one_device, forged}
    assert by_code[one_device].kind == "over_redeemed"
    assert by_code[one_device].hubs == ["tg-a", "tg-b"]
    assert by_code[forged].kind == "never_issued"
    # reports are idempotent: sending them again finds the same, records nothing new
    assert vouchers.reconcile(db, report(b)) == findings
    n = db.execute("SELECT count(*) FROM central_redemptions").fetchone()[0]
    assert n == 5
    # ops see the findings at any time, not only in the controller's log
    assert vouchers.findings_for(db) == sorted(findings, key=lambda f: f.code)
    assert vouchers.findings_command(db) == 1
    shown = capsys.readouterr().out
    assert f"over_redeemed {format_code(one_device)}" in shown and "tg-a, tg-b" in shown
    assert f"never_issued  {format_code(forged)}" in shown
    assert vouchers.findings_command(db, as_json=True) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"over_redeemed", "never_issued"}
    with pytest.raises(ValueError, match=r"voucher_redeemed\.device"):
        Redemption.from_event("tg-a", {"code": "X", "at": 1.0, "plan_id": "heure"})


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make test installs poppler-utils, zbar-tools)")
    return path


def test_hubctl_issue_writes_a_sheet_whose_codes_and_qr_codes_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pdftotext, pdftoppm, zbarimg = _need("pdftotext"), _need("pdftoppm"), _need("zbarimg")
    state = StateDir(tmp_path / "central")
    db = open_registry(tmp_path / "central" / "registry.db")
    out = tmp_path / "sheet.pdf"
    assert vouchers.issue_command(state, db, "heure", 13, out) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 13
    text = subprocess.run([pdftotext, "-layout", str(out), "-"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert "Pass 1 heure" in text and "100 FCFA" in text
    found_codes = set(re.findall(r"[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}", text))
    assert found_codes == set(printed)
    subprocess.run([pdftoppm, "-r", "150", "-png", str(out), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 2  # 10 cards per A4 page
    decoded = subprocess.run([zbarimg, "--quiet", "--raw", *map(str, pages)],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    portal = default_portal_url()
    assert sorted(decoded) == sorted(f"{portal}?code={c.replace('-', '')}" for c in printed)
    assert portal == "http://10.42.0.1:8080/"


def test_hubctl_issue_refuses_an_unknown_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = StateDir(tmp_path / "central")
    db = open_registry(tmp_path / "central" / "registry.db")
    assert vouchers.issue_command(state, db, "semaine", 3, None) == 2
    assert "--plan" in capsys.readouterr().err
    assert vouchers.issue_command(state, db, "heure", 0, None) == 2
    assert "--count" in capsys.readouterr().err
    assert format_code("ABCDEFGHJKMN") == "ABCD-EFGH-JKMN"


def test_one_phone_using_its_code_on_two_hubs_is_not_a_double(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "central")
    db = open_registry(tmp_path / "central" / "registry.db")
    secret = vouchers.voucher_secret(state)
    [code] = vouchers.issue_batch(db, secret, vouchers.catalogue()["heure"], 1, T0).codes
    a, b = hub(tmp_path, "tg-a", secret), hub(tmp_path, "tg-b", secret)
    for h in (a, b):
        assert h.login("02:00:00:00:00:09", None, "voucher", code, T0)[1] is None
    reports = [
        Redemption.from_event(h.config.hub.id, r.as_event(secret.encode()))
        for h in (a, b)
        for r in h.pending_redemptions()
    ]
    assert len(reports) == 2 and reports[0].mac == reports[1].mac  # same pseudonym
    assert vouchers.reconcile(db, reports) == []


def test_hub_sheet_for_local_codes(tmp_path: Path) -> None:
    pdftotext = _need("pdftotext")
    svc = hub(tmp_path, "tg-a", "x" * 32)
    codes = svc.issue_local_vouchers("jour", 3, T0)
    out = tmp_path / "local.pdf"
    assert render_sheet(hub_cards(svc.config, "jour", codes), out) == 1
    text = subprocess.run([pdftotext, str(out), "-"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert "Mairie de Démo" in text and "Pass journée" in text and "2 appareils" in text
    assert all(format_code(c) in text for c in codes)


def test_no_findings_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = open_registry(tmp_path / "central" / "registry.db")
    assert vouchers.findings_command(db) == 0
    assert "no voucher findings" in capsys.readouterr().out
