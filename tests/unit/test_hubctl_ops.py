"""hubctl for daily central ops (issue 18): big voucher batches (progress, PDFs split),
``vouchers --help``, ``fleet`` without a state folder, a push that renames a hub, and
editing one plan without restating the list (``plan set`` / plans as a mapping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning import push, pushplan, registry, vouchers
from provisioning.cli import main
from provisioning.hubdoc import base_document
from provisioning.pushplan import HubView, PushError, PushFile
from provisioning.statedir import StateDir

HUB = HubView("tg-kara-ecole-01", "school", "EPP Kara", "Kara", "Kozah")
FORCED = {"hub": {"id": HUB.id, "kind": HUB.kind}}  # as push forces it: no name


def test_vouchers_help_lists_issue_and_findings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["vouchers", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "issue" in out and "codes any hub verifies offline" in out and "findings" in out


def test_fleet_without_a_state_folder_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAIS_CENTRAL_DB", raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as e:
        main(["--state", str(missing), "fleet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(missing / "registry.db") in err and "RELAIS_CENTRAL_DIR" in err
    assert not missing.exists()  # nothing created


def test_big_batches_split_into_pdfs_with_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = StateDir(tmp_path / "central")
    state.ensure()
    db = registry.open_registry(state.registry_path)
    lines: list[str] = []
    out = tmp_path / "sheet.pdf"
    rc = vouchers.issue_command(state, db, "heure", 25, out, per_pdf=10, progress=lines.append)
    assert rc == 0
    codes = capsys.readouterr().out.split()
    assert len(codes) == 25 and len(set(codes)) == 25  # stdout: the codes only
    files = sorted(p.name for p in tmp_path.glob("sheet*.pdf"))
    assert files == ["sheet-001.pdf", "sheet-002.pdf", "sheet-003.pdf"]
    assert lines[0].startswith("25 code(s) issued") and lines[-1].endswith("25/25 done")
    assert "(2/3)" in lines[2] and "10 cards" in lines[1] and "5 cards" in lines[3]
    assert vouchers.pdf_paths(out, 1000, 1000) == [out]
    assert vouchers.issue_command(state, db, "heure", 5, out, per_pdf=0) == 2


def test_a_mapping_of_plans_edits_one_plan_and_keeps_the_rest() -> None:
    base = {**base_document(), "hub": {"id": HUB.id, "kind": HUB.kind, "name": HUB.name}}
    before = {p["id"]: p for p in base["plans"]}
    change = pushplan.parse_settings(["price_xof=150", "name.fr=Une heure", "up_kbit=768"])
    assert change == {"price_xof": 150, "name": {"fr": "Une heure"}, "up_kbit": 768}
    pf = PushFile(defaults={"plans": {"heure": change}})
    r = pushplan.render_hub(HUB, base, pf, 5, FORCED)
    plans = {p.id: p for p in r.config.plans}
    assert list(plans) == list(before)  # same plans, same order
    assert plans["heure"].price_xof == 150 and plans["heure"].up_kbit == 768
    assert plans["heure"].name["fr"] == "Une heure"
    assert plans["heure"].name.get("en") == before["heure"]["name"].get("en")  # merged
    assert plans["heure"].down_kbit == before["heure"]["down_kbit"]
    assert plans["jour"].model_dump(exclude_none=True) == pushplan.render_hub(
        HUB, base, PushFile(), 5, FORCED
    ).config.plan("jour").model_dump(exclude_none=True)
    # a new id appends a whole plan; null removes one; a list still replaces the list
    new = {"name": {"fr": "Semaine"}, "down_kbit": 2000, "up_kbit": 512}
    edits = PushFile(defaults={"plans": {"semaine": new, "jour": None}})
    ids = [p.id for p in pushplan.render_hub(HUB, base, edits, 5, FORCED).config.plans]
    assert ids == [i for i in before if i != "jour"] + ["semaine"]
    with pytest.raises(PushError, match=r"plans\.nope: no such plan"):
        pushplan.render_hub(HUB, base, PushFile(defaults={"plans": {"nope": None}}), 5, FORCED)
    with pytest.raises(PushError, match="down_kbit"):  # validated as any push
        pushplan.render_hub(
            HUB, base, PushFile(defaults={"plans": {"heure": {"down_kbit": -1}}}), 5, FORCED
        )
    with pytest.raises(PushError, match="KEY=VALUE"):
        pushplan.parse_settings(["price_xof"])


def test_a_push_that_renames_a_hub_renames_it_in_the_registry(tmp_path: Path) -> None:
    db = registry.open_registry(tmp_path / "registry.db")
    registry.upsert_hub(db, registry.HubRecord(HUB.id, "school", "EPP Kara", "Kara"), None)
    pf = PushFile(hubs={HUB.id: {"hub": {"name": "EPP Kara-Nord", "region": "Kara"}}})
    base = {**base_document(), "hub": {"id": HUB.id, "kind": HUB.kind, "name": HUB.name}}
    r = pushplan.render_hub(HUB, base, pf, 2, FORCED)
    assert push.rename_from_config(db, r) is True
    row = registry.get_hub(db, HUB.id)
    assert row is not None and row["name"] == "EPP Kara-Nord" and row["region"] == "Kara"
    assert push.rename_from_config(db, r) is False  # already so
