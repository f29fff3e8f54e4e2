"""HTML bundles: unpacked safely beside the download, linked from the library page."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path

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


def test_synced_bundle_is_unpacked_and_listed_browsable(tmp_path: Path) -> None:
    data = _zip({"cours/index.html": b"<h1>Le\xc3\xa7on 1</h1>", "cours/img/a.png": b"png"})
    item = ContentItem(
        id="cours-svt",
        title={"fr": "SVT"},
        kind="html",
        url="http://cdn.example.test/cours-svt.zip",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["data_dir"] = str(tmp_path)
    doc["content"]["items"] = [item.model_dump(mode="json", exclude_none=True)]
    sync = ContentSync(validate_config(doc), open_db(tmp_path / "hub.db", CONTENT))
    sync.reconcile()
    part = sync.library.part_path(item.id)
    part.write_bytes(data)  # as the downloader leaves it, verified
    sync._ready(item, part, source="uplink")
    site = tmp_path / "content" / "files" / "cours-svt" / "site"
    assert (site / "cours" / "index.html").read_text() == "<h1>Leçon 1</h1>"
    (entry,) = json.loads(sync.library.index_path.read_text())["items"]
    assert entry["browse"] == "/files/cours-svt/site/cours/index.html"
    assert entry["href"] == "/files/cours-svt/cours-svt.zip"
    sync.library.remove(item.id)  # eviction takes the unpacked pages too
    assert not site.exists()
