"""HTML bundles: unpacked safely beside the download, linked from the library page."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.config import ContentItem, validate_config
from hub_agent.content import bundle
from hub_agent.content.state import CONTENT
from hub_agent.content.sync import ContentSync
from hub_agent.store import open_db

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"


def _zip(entries: dict[str, bytes], link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("bad", ["../evil.html", "/abs.html", "a/../../b.html"])
def test_unsafe_entries_are_refused(tmp_path: Path, bad: str) -> None:
    archive = tmp_path / "b.zip"
    archive.write_bytes(_zip({"index.html": b"ok", bad: b"x"}))
    with pytest.raises(bundle.BundleError, match="unsafe"):
        bundle.unpack(archive, tmp_path)
    assert not (tmp_path / "site").exists()
    assert not (tmp_path.parent / "evil.html").exists()


def test_links_and_zip_bombs_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "l.zip"
    archive.write_bytes(_zip({"index.html": b"ok"}, link="passwd"))
    with pytest.raises(bundle.BundleError, match="link"):
        bundle.unpack(archive, tmp_path)
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip({"index.html": b"\0" * 5_000_000}))  # compresses ~1000x
    with pytest.raises(bundle.BundleError, match="over"):
        bundle.unpack(bomb, tmp_path)


def test_entry_page_at_top_or_in_one_folder() -> None:
    assert bundle.entry_page(["index.html", "css/a.css"]) == "index.html"
    assert bundle.entry_page(["cours/index.html", "cours/p2.html"]) == "cours/index.html"
    assert bundle.entry_page(["a/index.html", "b/index.html"]) is None


def _sync_with(
    tmp_path: Path, data: bytes, budget_mb: int, item_id: str = "site"
) -> tuple[ContentSync, ContentItem]:
    """A library with one HTML bundle whose verified download lies in its .part file."""
    item = ContentItem(
        id=item_id,
        title={"fr": item_id},
        kind="html",
        url=f"http://cdn.example.test/{item_id}.zip",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["data_dir"] = str(tmp_path)
    doc["content"]["items"] = [item.model_dump(mode="json", exclude_none=True)]
    doc["content"]["budget_mb"] = budget_mb
    sync = ContentSync(validate_config(doc), open_db(tmp_path / "hub.db", CONTENT))
    sync.reconcile()
    sync.library.part_path(item.id).write_bytes(data)
    return sync, item


def _recorder(events: list[dict[str, object]]) -> Any:
    def record(type: str, /, **fields: object) -> None:
        events.append({"type": type, **fields})

    return record


def _stored_zip(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("index.html", bytes(range(256)) * (n // 256))
    return buf.getvalue()


def test_synced_bundle_is_unpacked_and_listed_browsable(tmp_path: Path) -> None:
    data = _zip({"cours/index.html": b"<h1>Le\xc3\xa7on 1</h1>", "cours/img/a.png": b"png"})
    sync, item = _sync_with(tmp_path, data, budget_mb=20_000, item_id="cours-svt")
    sync._ready(item, sync.library.part_path(item.id), source="uplink")
    site = tmp_path / "content" / "files" / "cours-svt" / "site"
    assert (site / "cours" / "index.html").read_text() == "<h1>Leçon 1</h1>"
    (entry,) = json.loads(sync.library.index_path.read_text())["items"]
    assert entry["browse"] == "/files/cours-svt/site/cours/index.html"
    assert entry["href"] == "/files/cours-svt/cours-svt.zip"
    sync.library.remove(item.id)  # eviction takes the unpacked pages too
    assert not site.exists()


def test_unpacked_pages_count_in_the_disk_budget(tmp_path: Path) -> None:
    data = _stored_zip(300_000)  # 300 kB archive + 300 kB of pages in a 1 MB budget
    sync, item = _sync_with(tmp_path, data, budget_mb=1)
    events: list[dict[str, object]] = []
    sync.on_event = _recorder(events)
    sync._ready(item, sync.library.part_path(item.id), source="uplink")
    held = sync.state.held()[item.id]
    assert held.state == "ready" and held.bytes_on_disk == len(data) + 299_776
    assert (tmp_path / "content" / "files" / "site" / "site" / "index.html").is_file()
    assert not [e for e in events if e["type"] == "cache_sync_failed"]


def test_a_bundle_whose_pages_do_not_fit_stays_a_download(tmp_path: Path) -> None:
    data = _stored_zip(600_000)  # 600 kB archive + 600 kB of pages > a 1 MB budget
    sync, item = _sync_with(tmp_path / "big", data, budget_mb=1)
    events: list[dict[str, object]] = []
    sync.on_event = _recorder(events)
    sync._ready(item, sync.library.part_path(item.id), source="uplink")
    held = sync.state.held()[item.id]
    assert held.state == "ready" and held.bytes_on_disk == len(data)  # the zip only
    assert not (tmp_path / "big" / "content" / "files" / "site" / "site").exists()
    (failed,) = [e for e in events if e["type"] == "cache_sync_failed"]
    assert failed["refused"] == "not_browsable" and "no room to unpack" in str(failed["reason"])
