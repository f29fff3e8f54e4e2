"""Where the library lives on disk, and the index the portal reads.

    <data_dir>/content/files/<id>/<name>   ready items, served by nginx (read-only)
    <data_dir>/content/partial/<id>.part   downloads in progress (never served)
    <data_dir>/content/library.json        ready items for the portal's /content/ page
    <data_dir>/content/run/                nginx/kiwix config, pid and logs

An item becomes visible only by an atomic rename from partial/ into files/, after its
sha256 was checked, so a reader never sees a half or corrupted file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hub_agent.config import ContentItem

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DEFAULT_EXT = {"video": ".mp4", "pdf": ".pdf", "zim": ".zim", "html": ".zip", "app": ".apk"}
HASH_BLOCK = 1024 * 1024


def file_name(item: ContentItem) -> str:
    """A safe file name keeping the source's extension (nginx derives the type from it)."""
    base = unquote(urlsplit(item.url).path.rsplit("/", 1)[-1])
    base = _SAFE.sub("_", base).strip("._")
    if not base or "." not in base:
        base = f"{item.id}{_DEFAULT_EXT[item.kind]}"
    return base[:120]


def sha256_file(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = limit
        while left is None or left > 0:
            block = f.read(HASH_BLOCK if left is None else min(HASH_BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Library:
    root: Path  # <data_dir>/content

    @classmethod
    def under(cls, data_dir: Path) -> Library:
        return cls(data_dir / "content")

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def partial_dir(self) -> Path:
        return self.root / "partial"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def index_path(self) -> Path:
        return self.root / "library.json"

    def ensure(self) -> None:
        for d in (self.root, self.files_dir, self.partial_dir, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # nginx workers (unprivileged) read files/

    def file_path(self, item: ContentItem) -> Path:
        return self.files_dir / item.id / file_name(item)

    def href(self, item: ContentItem) -> str:
        return f"/files/{item.id}/{file_name(item)}"

    def browse_href(self, item: ContentItem) -> str | None:
        """An unpacked HTML bundle's entry page, when there is one."""
        marker = self.files_dir / item.id / "site.entry"
        try:
            entry = marker.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return f"/files/{item.id}/site/{entry}" if entry else None

    def part_path(self, item_id: str) -> Path:
        return self.partial_dir / f"{item_id}.part"

    def publish(self, item: ContentItem, part: Path) -> Path:
        """Rename a verified .part into place (atomic), after it is on disk for good."""
        dest = self.file_path(item)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.parent.chmod(0o755)
        os.chmod(part, 0o644)
        os.replace(part, dest)
        fsync_dir(dest.parent)
        return dest

    def remove(self, item_id: str) -> None:
        """Forget an item's bytes: its published file (if any) and its .part."""
        shutil.rmtree(self.files_dir / item_id, ignore_errors=True)  # file, unpacked bundle
        self.part_path(item_id).unlink(missing_ok=True)

    def write_index(self, ready: Iterable[ContentItem]) -> None:
        """library.json for the portal, replaced atomically (readers never see half)."""
        items: list[dict[str, Any]] = [
            {
                "id": i.id,
                "title": dict(i.title),
                "kind": i.kind,
                "language": i.language,
                "size": i.size,
                "href": self.href(i),
                "browse": self.browse_href(i) if i.kind == "html" else None,
                "pinned": i.priority == "pinned",
            }
            for i in ready
        ]
        doc = {"items": items, "wiki": "/wiki/" if any(i["kind"] == "zim" for i in items) else None}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".library.{secrets.token_hex(4)}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.index_path)
