"""Sneakernet: take manifest items from a folder (a USB stick, a neighbour hub's library).

Any file whose sha256 equals a wanted item's is copied in without touching the uplink.
Only files of exactly a wanted item's size are hashed, so a stick full of unrelated
files costs a directory walk, not a read of every byte.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hub_agent.config import ContentItem
from hub_agent.content.library import sha256_file

COPY_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Match:
    item: ContentItem
    path: Path


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield p


def scan(
    root: Path,
    wanted: Iterable[ContentItem],
    cache: dict[tuple[str, int, int], str] | None = None,
) -> list[Match]:
    """Files under ``root`` matching wanted items by size, then by sha256.

    ``cache`` maps (path, size, mtime_ns) -> sha256 across scans of the same folder.
    """
    by_size: dict[int, list[ContentItem]] = {}
    for item in wanted:
        by_size.setdefault(item.size, []).append(item)
    if not by_size or not root.is_dir():
        return []
    found: dict[str, Match] = {}
    for p in _walk(root):
        try:
            st = p.stat()
        except OSError:
            continue
        candidates = by_size.get(st.st_size)
        if not candidates:
            continue
        key = (str(p), st.st_size, st.st_mtime_ns)
        digest = cache.get(key) if cache is not None else None
        if digest is None:
            try:
                digest = sha256_file(p)
            except OSError:
                continue
            if cache is not None:
                cache[key] = digest
        for item in candidates:
            if item.sha256 == digest and item.id not in found:
                found[item.id] = Match(item, p)
    return list(found.values())


def copy_into(src: Path, part: Path) -> None:
    """Copy to the .part path and fsync; the caller verifies and publishes."""
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(part, "wb") as fout:
        while block := fin.read(COPY_BLOCK):
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())


def wanted_items(manifest: Iterable[ContentItem], states: Mapping[str, str]) -> list[ContentItem]:
    return [i for i in manifest if states.get(i.id) not in (None, "ready")]
