"""The downloader against a local HTTP server (127.0.0.1): resume, Range-less sources,
errors and pausing. The lab tests do the same across the hub's real uplink."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub_agent.config import ContentItem
from hub_agent.content.bucket import TokenBucket
from hub_agent.content.fetch import FetchError, Paused, Progress, fetch
from lab import upstream_http


class NoRange(SimpleHTTPRequestHandler):
    """A source that ignores Range (answers 200 with the whole file)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up early is part of these tests


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    root = tmp_path / "www"
    root.mkdir()
    urls = {}
    servers = []
    for name, handler in (("range", upstream_http.Handler), ("norange", NoRange)):

        def make(*a: Any, handler: Any = handler, **kw: Any) -> Any:
            return handler(*a, directory=str(root), **kw)

        srv = QuietServer(("127.0.0.1", 0), make)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        urls[name] = f"http://127.0.0.1:{srv.server_address[1]}"
    yield root, urls
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _item(url: str, data: bytes) -> ContentItem:
    return ContentItem(
        id="x",
        title={"fr": "x"},
        kind="video",
        url=url,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _run(item: ContentItem, part: Path, **kw: Any) -> Progress:
    async def go() -> Progress:
        async with httpx.AsyncClient(timeout=5) as client:
            return await fetch(client, item, part, None, lambda p: None, **kw)

    return asyncio.run(go())


def test_resumes_from_the_bytes_on_disk(
    served: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, urls = served
    data = os.urandom(300_000)
    (root / "v.mp4").write_bytes(data)
    part = tmp_path / "x.part"
    part.write_bytes(data[:123_456])
    prog = _run(_item(urls["range"] + "/v.mp4", data), part, range_chunk=64 * 1024)
    assert part.read_bytes() == data
    assert prog.fetched == len(data) - 123_456  # nothing fetched twice


def test_source_ignoring_range_restarts_from_zero(
    served: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, urls = served
    data = os.urandom(200_000)
    (root / "v.mp4").write_bytes(data)
    part = tmp_path / "x.part"
    part.write_bytes(data[:50_000])
    prog = _run(_item(urls["norange"] + "/v.mp4", data), part, range_chunk=64 * 1024)
    assert part.read_bytes() == data  # never spliced
    assert prog.fetched == len(data)


def test_missing_source_and_wrong_length_are_errors(
    served: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, urls = served
    with pytest.raises(FetchError, match="HTTP 404"):
        _run(_item(urls["range"] + "/absent.mp4", b"abc"), tmp_path / "a.part")
    (root / "short.mp4").write_bytes(b"12345")
    with pytest.raises(FetchError, match="ended early"):
        _run(_item(urls["range"] + "/short.mp4", b"1234567890"), tmp_path / "s.part")
    (root / "long.mp4").write_bytes(b"1234567890")
    with pytest.raises(FetchError, match="longer"):
        _run(_item(urls["norange"] + "/long.mp4", b"12345"), tmp_path / "l.part")


def test_pause_keeps_the_bytes(served: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, urls = served
    data = os.urandom(500_000)
    (root / "v.mp4").write_bytes(data)
    part = tmp_path / "x.part"
    with pytest.raises(Paused):
        _run(_item(urls["range"] + "/v.mp4", data), part, keep_going=lambda: False)
    kept = part.read_bytes()
    assert 0 < len(kept) < len(data) and data.startswith(kept)


def test_bucket_paces_the_download(served: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, urls = served
    data = os.urandom(256 * 1024)
    (root / "v.mp4").write_bytes(data)
    delays: list[float] = []
    bucket = TokenBucket(rate_bps=1e12, burst=1.0)  # never sleeps long, but is consulted

    orig = bucket.reserve

    def spy(n: int, now: float) -> float:
        delays.append(n)
        return orig(n, now)

    bucket.reserve = spy  # type: ignore[method-assign]

    async def go() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            await fetch(client, _item(urls["range"] + "/v.mp4", data), tmp_path / "x.part",
                        bucket, lambda p: None)  # fmt: skip

    asyncio.run(go())
    assert sum(delays) == len(data)  # every byte went through the bucket
