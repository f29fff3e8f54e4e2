"""The central catalogue and ``hubctl content add|list|assign``, down to a hub's config."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.config import ContentItem, validate_config
from provisioning import content_catalogue as catalogue
from provisioning import registry
from provisioning.cli import main as hubctl
from provisioning.content_catalogue import HubRef, Target

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
SHA = "b" * 64


def _item(item_id: str, **kw: Any) -> ContentItem:
    return ContentItem(
        id=item_id,
        title={"fr": item_id},
        kind=kw.pop("kind", "pdf"),
        url="http://cdn.example.test/a.pdf",
        size=10,
        sha256=SHA,
        **kw,
    )


def test_targets_match_by_hub_kind_region_group_and_all() -> None:
    hub = HubRef("tg-kara-ecole-01", "school", "Kara", ("pilot",))
    assert catalogue.matches(Target("hub", "tg-kara-ecole-01"), hub)
    assert catalogue.matches(Target("kind", "school"), hub)
    assert not catalogue.matches(Target("kind", "clinic"), hub)
    assert catalogue.matches(Target("region", "kara"), hub)  # case-insensitive
    assert catalogue.matches(Target("group", "pilot"), hub)
    assert not catalogue.matches(Target("group", "other"), hub)
    assert catalogue.matches(Target("all"), hub)


def test_selection_drops_expired_and_orders_pinned_first() -> None:
    items = [
        _item("b-normal"),
        _item("a-old", valid_until="2026-01-31"),
        _item("z-pinned", priority="pinned"),
        _item("untargeted"),
    ]
    tg = {i.id: [Target("all")] for i in items if i.id != "untargeted"}
    hub = HubRef("h", "mairie")
    chosen = catalogue.select_for_hub(items, tg, hub, today=date(2026, 6, 1))
    assert [i.id for i in chosen] == ["z-pinned", "b-normal"]


def _hubctl(tmp: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        hubctl(["--state", str(tmp), "content", *argv])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_hubctl_content_add_assign_list_and_manifest_in_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "central"
    db = registry.open_registry(state / "registry.db")
    registry.upsert_hub(db, registry.HubRecord("tg-kara-ecole-01", "school", "EPP Kara"), None)
    registry.upsert_hub(db, registry.HubRecord("tg-lome-cms-01", "clinic", "CMS Lomé"), None)

    pdf = tmp_path / "maths-cm2.pdf"
    pdf.write_bytes(b"%PDF-1.4 cours de maths\n" * 100)
    code, out, err = _hubctl(
        state, "add", "maths-cm2", "--kind", "pdf", "--file", str(pdf),
        "--url", "https://cdn.example.test/ecole/maths-cm2.pdf",
        "--title-fr", "Maths CM2", "--title-en", "Year 6 maths", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "added maths-cm2" in out

    # bad input: a clear error naming the field, nothing stored
    code, _, err = _hubctl(
        state, "add", "Bad_Id", "--kind", "pdf", "--size", "5", "--sha256", "xyz",
        "--url", "ftp://x", "--title-fr", "x", capsys=capsys,
    )  # fmt: skip
    assert code == 2
    assert "id:" in err and "sha256:" in err and "url:" in err
    code, _, err = _hubctl(state, "add", "again", "--kind", "pdf", "--title-fr", "x",
                           "--url", "http://a.test/x", capsys=capsys)  # fmt: skip
    assert code == 2 and "--file" in err

    code, out, err = _hubctl(state, "assign", "maths-cm2", "--kind", "school", capsys=capsys)
    assert code == 0, err
    assert "kind:school" in out
    code, _, err = _hubctl(state, "assign", "nope", "--all", capsys=capsys)
    assert code == 2 and "nope" in err

    code, out, _ = _hubctl(state, "list", "--json", capsys=capsys)
    (row,) = json.loads(out)
    assert row["targets"] == ["kind:school"]
    assert row["size"] == pdf.stat().st_size
    assert row["sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()

    code, out, _ = _hubctl(state, "list", "--hub", "tg-lome-cms-01", capsys=capsys)
    assert "no items" in out
    code, out, _ = _hubctl(state, "list", "--hub", "tg-kara-ecole-01", capsys=capsys)
    assert "maths-cm2" in out

    # what the push code embeds: a valid hub config carrying the manifest
    manifest = catalogue.manifest_for(
        catalogue_db := registry.open_registry(state / "registry.db"), "tg-kara-ecole-01"
    )
    assert [i.id for i in manifest] == ["maths-cm2"]
    doc = catalogue.embed_manifest(yaml.safe_load(EXAMPLE.read_text()), manifest)
    cfg = validate_config(doc)
    assert cfg.content.items[0].title == {"fr": "Maths CM2", "en": "Year 6 maths"}
    catalogue_db.conn.close()

    code, out, _ = _hubctl(state, "assign", "maths-cm2", "--kind", "school", "--remove",
                           capsys=capsys)  # fmt: skip
    assert "targets now none" in out


def test_unknown_hub_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _hubctl(tmp_path, "list", "--hub", "tg-nowhere", capsys=capsys)
    assert code == 2 and "tg-nowhere" in err and "not enrolled" in err


def test_manifest_for_a_registry_without_catalogue_is_empty(tmp_path: Path) -> None:
    db = registry.open_registry(tmp_path / "registry.db")  # only provisioning's tables
    registry.upsert_hub(db, registry.HubRecord("tg-a", "mairie", "A"), None)
    assert catalogue.manifest_for(db, "tg-a") == []
