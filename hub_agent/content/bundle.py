"""HTML bundles (kind "html", a .zip of a course or a site) unpacked so they are browsable.

The verified zip stays as the download; its pages are unpacked beside it under
``files/<id>/site/`` and the library links to the bundle's ``index.html``. Entries that
would land outside the folder (absolute paths, ``..``, links) are refused, and the unpacked
size is bounded, so a hostile or broken archive cannot fill the disk.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

SITE = "site"
MAX_EXPANSION = 10  # unpacked bytes at most this many times the archive's size


class BundleError(ValueError):
    pass


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in name:
        raise BundleError(f"unsafe entry in bundle: {name!r}")
    return p


def plan_entries(infos: list[zipfile.ZipInfo], archive_size: int) -> list[zipfile.ZipInfo]:
    """Pure: the entries to unpack, after the safety checks (raises BundleError)."""
    files = []
    total = 0
    for info in infos:
        _safe_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise BundleError(f"symbolic link in bundle: {info.filename!r}")
        if info.is_dir():
            continue
        total += info.file_size
        files.append(info)
    if total > MAX_EXPANSION * max(archive_size, 1):
        raise BundleError(f"bundle unpacks to {total} bytes, over {MAX_EXPANSION}x its size")
    return files


def unpacked_size(archive: Path) -> int:
    """Bytes the bundle's pages take once unpacked (raises BundleError when unsafe)."""
    with zipfile.ZipFile(archive) as z:
        return sum(i.file_size for i in plan_entries(z.infolist(), archive.stat().st_size))


def entry_page(names: list[str]) -> str | None:
    """The page to link: index.html at the top, or in the single top-level folder."""
    if "index.html" in names:
        return "index.html"
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = next(iter(tops))
        if f"{top}/index.html" in names:
            return f"{top}/index.html"
    return None


def unpack(archive: Path, dest_folder: Path) -> str | None:
    """Unpack into ``dest_folder/site`` (atomically replaced); return the entry page."""
    tmp = dest_folder / f".{SITE}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(archive) as z:
        entries = plan_entries(z.infolist(), archive.stat().st_size)
        for info in entries:
            target = tmp / _safe_name(info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(target, 0o644)
        names = [i.filename for i in entries]
    for d in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
        os.chmod(d, 0o755)
    final = dest_folder / SITE
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return entry_page(names)
