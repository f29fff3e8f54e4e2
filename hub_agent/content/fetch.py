"""Download one item over the uplink: resumable (HTTP Range), capped, fsync'd.

The .part file on disk is the truth: a resumed download asks for ``bytes=<len(.part)>-``,
so whatever was written before a cut, a kill -9 or a closed window is never fetched again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from hub_agent.config import ContentItem
from hub_agent.content.bucket import TokenBucket

CHUNK = 64 * 1024
FSYNC_EVERY = 1024 * 1024  # progress is durable (and reported) every MiB


class FetchError(Exception):
    """A download attempt failed; the bytes already on disk are kept unless said otherwise."""


class Paused(Exception):
    """The window closed (or the agent is stopping): stop now, resume later."""


@dataclass
class Progress:
    bytes_done: int  # length of the .part on disk (fsync'd)
    fetched: int  # bytes received over the uplink in this attempt


def range_chunk_for(rate_bps: float) -> int:
    """Bytes asked per request: about 2 s at the cap, between 256 KiB and 4 MiB.

    Asking for bounded ranges (not "everything from here") is what bounds the waste of a
    cut: the source never has more than the rest of one chunk queued towards the hub, so
    a resumed download costs at most one chunk beyond the item's size. Two seconds per
    request keeps the round trip between requests a small share of the time.
    """
    return int(min(4 << 20, max(256 << 10, 2 * rate_bps)))


async def fetch(
    client: httpx.AsyncClient,
    item: ContentItem,
    part: Path,
    bucket: TokenBucket | None,
    on_progress: Callable[[Progress], None],
    keep_going: Callable[[], bool] = lambda: True,
    range_chunk: int = 1 << 20,
) -> Progress:
    """Bring ``part`` up to ``item.size`` bytes. Raises FetchError or Paused."""
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if offset > item.size:
        offset = _truncate(part, 0)
    prog = Progress(bytes_done=offset, fetched=0)
    try:
        while prog.bytes_done < item.size:
            last = min(item.size, prog.bytes_done + range_chunk) - 1
            await _fetch_range(client, item, part, bucket, prog, on_progress, keep_going, last)
    except httpx.TransportError as e:
        raise FetchError(f"network: {type(e).__name__}") from None
    except httpx.HTTPError as e:  # redirects loop, bad URL...: the source's fault
        raise FetchError(f"source: {type(e).__name__}: {e}") from None
    return prog


async def _fetch_range(
    client: httpx.AsyncClient,
    item: ContentItem,
    part: Path,
    bucket: TokenBucket | None,
    prog: Progress,
    on_progress: Callable[[Progress], None],
    keep_going: Callable[[], bool],
    last: int,
) -> None:
    offset = prog.bytes_done
    headers = {"Range": f"bytes={offset}-{last}"}
    async with client.stream("GET", item.url, headers=headers) as r:
        if r.status_code == 206:
            start = _range_start(r.headers.get("content-range", ""))
            if start != offset:
                raise FetchError(f"server answered from byte {start}, asked for {offset}")
            want = last + 1
        elif r.status_code == 200:
            # The source ignores Range: take the whole body, from zero (never splice).
            prog.bytes_done = _truncate(part, 0)
            want = item.size
        elif r.status_code == 416:
            _truncate(part, 0)
            prog.bytes_done = 0
            raise FetchError("source refused the range (416): did it change?")
        else:
            raise FetchError(f"HTTP {r.status_code} from source")
        await _copy(r, item, part, bucket, prog, on_progress, keep_going)
    if prog.bytes_done < want:
        raise FetchError(f"source ended early at {prog.bytes_done} of {item.size} bytes")


async def _copy(
    r: httpx.Response,
    item: ContentItem,
    part: Path,
    bucket: TokenBucket | None,
    prog: Progress,
    on_progress: Callable[[Progress], None],
    keep_going: Callable[[], bool],
) -> None:
    unsynced = 0
    with open(part, "ab") as f:
        try:
            async for block in r.aiter_raw(CHUNK):
                prog.fetched += len(block)
                if prog.bytes_done + len(block) > item.size:
                    raise FetchError(f"source is longer than {item.size} bytes")
                f.write(block)
                prog.bytes_done += len(block)
                unsynced += len(block)
                if unsynced >= FSYNC_EVERY:
                    _sync(f)
                    unsynced = 0
                    on_progress(prog)
                if not keep_going():
                    raise Paused()
                if bucket is not None:
                    await bucket.take(len(block))
        finally:
            _sync(f)
            on_progress(prog)


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _truncate(part: Path, size: int) -> int:
    with open(part, "r+b" if part.exists() else "wb") as f:
        f.truncate(size)
        os.fsync(f.fileno())
    return size


def _range_start(content_range: str) -> int:
    # "bytes 100-199/1000"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1
