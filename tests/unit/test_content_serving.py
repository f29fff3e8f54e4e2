"""Pure and local parts of the cache: nginx config, access-log usage, names, import scan,
the state store and the sync's reconcile/refusal logic (no network)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hub_agent.config import ContentItem, HubConfig, validate_config
from hub_agent.content import importer
from hub_agent.content.library import Library, file_name
from hub_agent.content.nginx import NginxPlan, NginxServer, ingest, parse_log, render_config
from hub_agent.content.state import CONTENT, ContentState
from hub_agent.content.sync import ContentSync, SyncOptions
from hub_agent.store import open_db
from lab.broker import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"


def _item(item_id: str, data: bytes = b"x", **kw: Any) -> ContentItem:
    return ContentItem(
        id=item_id,
        title={"fr": item_id},
        kind=kw.pop("kind", "video"),
        url=kw.pop("url", f"http://cdn.example.test/v/{item_id}.mp4"),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        **kw,
    )


def test_nginx_config_serves_files_with_sendfile_and_proxies_wiki(tmp_path: Path) -> None:
    plan = NginxPlan(
        content_root=tmp_path / "content",
        run_dir=tmp_path / "run",
        listen=("10.42.0.1:8081", "[fd42::1]:8081"),
        portal_url="http://10.42.0.1:8080/content/",
        kiwix_port=8082,
        user="www-data",
    )
    conf = render_config(plan)
    assert "user www-data;" in conf
    assert "sendfile on;" in conf and "tcp_nopush on;" in conf and "etag on;" in conf
    assert "listen 10.42.0.1:8081;" in conf and "listen [fd42::1]:8081;" in conf
    assert f"location /files/ {{\n            root {tmp_path / 'content'};" in conf
    assert "proxy_pass http://127.0.0.1:8082;" in conf
    assert "video/mp4 mp4 m4v;" in conf and "application/x-zim zim;" in conf
    assert "return 302 http://10.42.0.1:8080/content/;" in conf
    # partial downloads are outside every location that serves files
    assert "/partial" not in conf
    no_wiki = render_config(NginxPlan(plan.content_root, plan.run_dir, plan.listen, "u"))
    assert "/wiki/" not in no_wiki and "user " not in no_wiki


def test_access_log_usage_hits_bytes_misses() -> None:
    lines = [
        "1700000000.100 200 5000 GET /files/a/a.mp4",
        "1700000001.200 206 1000 GET /files/a/a.mp4",
        "1700000002.300 304 0 GET /files/b/b.pdf",
        "1700000003.400 404 153 GET /files/gone/x.pdf",
        "1700000004.500 200 0 HEAD /files/a/a.mp4",  # probing: not a use
        "1700000005.600 404 153 GET /favicon.ico",  # not the library
        "garbage line",
        "1700000006.700 200 10 GET /files/a",  # no file part: a miss
    ]
    u = parse_log(lines, known={"a", "b"})
    assert u.per_item == {"a": (2, 6000, 1700000001.2), "b": (1, 0, 1700000002.3)}
    assert u.misses == 2


def test_ingest_reads_each_line_once_and_survives_rotation(tmp_path: Path) -> None:
    db = open_db(tmp_path / "hub.db", CONTENT)
    state = ContentState(db)
    state.add("a", 10, "0" * 64, pinned=False)
    log = tmp_path / "access.log"
    log.write_text("1.0 200 10 GET /files/a/a.mp4\n2.0 200 10 GET /files/a/a.mp4\n3.0 200 1")
    ingest(log, state)
    assert state.row("a")["hits"] == 2  # type: ignore[index]
    with open(log, "a") as f:  # the half line completes, one more arrives
        f.write("0 GET /files/a/a.mp4\n")
    ingest(log, state)
    ingest(log, state)
    row = state.row("a")
    assert row is not None and (row["hits"], row["bytes_served"]) == (3, 30)
    log.unlink()  # rotated: a new file starts from its beginning
    log.write_text("4.0 206 5 GET /files/a/a.mp4\n")
    ingest(log, state)
    row = state.row("a")
    assert row is not None and (row["hits"], row["last_used"]) == (4, 4.0)


def test_file_names_are_safe_and_keep_the_extension() -> None:
    assert file_name(_item("x", url="http://h.test/a/Guide%20Palu.pdf", kind="pdf")) == (
        "Guide_Palu.pdf"
    )
    assert file_name(_item("x", url="http://h.test/../../etc/passwd")) == "x.mp4"
    assert file_name(_item("w", url="http://h.test/dl?id=3", kind="zim")) == "w.zim"


def test_import_scan_matches_by_size_then_sha256(tmp_path: Path) -> None:
    want = os.urandom(1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "copy.mp4").write_bytes(want)
    (tmp_path / "decoy.mp4").write_bytes(os.urandom(1000))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "also.mp4").write_bytes(want)
    cache: dict[tuple[str, int, int], str] = {}
    (m,) = importer.scan(tmp_path, [_item("v", want), _item("other", b"y" * 7)], cache)
    assert m.item.id == "v" and m.path == tmp_path / "sub" / "copy.mp4"
    assert len(cache) == 2  # only the two same-size files were hashed
    assert importer.scan(tmp_path / "missing", [_item("v", want)]) == []


def _config(tmp_path: Path, items: list[ContentItem], **content: Any) -> HubConfig:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["data_dir"] = str(tmp_path)
    data["content"].update(content)
    data["content"]["items"] = [i.model_dump(mode="json", exclude_none=True) for i in items]
    return validate_config(data)


def test_sync_refuses_oversize_once_and_drops_unassigned(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    def on_event(type: str, /, **fields: Any) -> None:
        events.append((type, fields))

    big = _item("big", b"z" * 2_000_000)
    small = _item("small", b"s" * 10)
    db = open_db(tmp_path / "hub.db", CONTENT)
    cfg = _config(tmp_path, [big, small], budget_mb=1, sync_window="03:00-03:01")
    sync = ContentSync(cfg, db, on_event, SyncOptions(), clock=lambda: 1.0)  # 00:00 UTC
    assert asyncio.run(sync.step()) is False  # outside the window: nothing to do
    assert events == [
        (
            "cache_sync_failed",
            {
                "item": "big",
                "refused": "oversize",
                "reason": "larger than the disk budget",
                "size": 2_000_000,
                "budget": 1_000_000,
            },
        )
    ]
    sync.reconcile()
    assert len(events) == 1  # said once, not at every step
    rep = sync.report()
    assert {i["id"]: i["state"] for i in rep["items"]} == {"big": "failed", "small": "queued"}
    assert json.loads(Library.under(tmp_path).index_path.read_text())["items"] == []

    sync.set_config(_config(tmp_path, [small], budget_mb=1, sync_window="03:00-03:01"))
    sync.reconcile()
    assert events[-1] == ("cache_item_removed", {"item": "big", "reason": "unassigned"})
    assert [i["id"] for i in sync.report()["items"]] == ["small"]


def test_report_totals_and_hit_ratio(tmp_path: Path) -> None:
    state = ContentState(open_db(tmp_path / "hub.db", CONTENT))
    state.add("a", 100, "0" * 64, pinned=True)
    state.update("a", state="ready", bytes_done=100)
    state.add("b", 50, "1" * 64, pinned=False)
    state.update("b", state="downloading", bytes_done=20)
    state.record_usage({"a": (1, 50, 8.0)}, misses=3, log_offset=5, log_inode=1, day="2026-11-22")
    state.record_usage({"a": (3, 250, 9.0)}, misses=1, log_offset=10, log_inode=1, day="2026-11-23")
    from hub_agent.content.sync import build_report

    rep = build_report(state, budget=1000, day="2026-11-23")
    assert rep["used_bytes"] == 120
    assert (rep["hits"], rep["misses"], rep["hit_ratio"]) == (4, 4, 0.5)
    assert rep["hit_ratio_today"] == 0.75  # yesterday's counters are gone
    items = {i["id"]: i for i in rep["items"]}
    assert items["b"]["bytes_done"] == 20 and items["a"]["bytes_served"] == 300


@pytest.mark.parametrize("bad", ["x" * 64, "abc"])
def test_manifest_item_with_bad_sha256_is_refused_with_its_path(bad: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["content"]["items"] = [
        {"id": "a", "title": {"fr": "a"}, "kind": "pdf", "url": "http://h.test/a.pdf",
         "size": 1, "sha256": bad}
    ]  # fmt: skip
    from hub_agent.config import ConfigError

    with pytest.raises(ConfigError) as e:
        validate_config(data)
    assert [p for p, _ in e.value.problems] == ["content.items.0.sha256"]


def test_crash_between_publish_and_commit_is_adopted_not_refetched(tmp_path: Path) -> None:
    events: list[str] = []
    data = os.urandom(5000)
    item = _item("v", data)
    db = open_db(tmp_path / "hub.db", CONTENT)
    cfg = _config(tmp_path, [item], sync_window="03:00-03:01")
    sync = ContentSync(cfg, db, lambda t, /, **f: events.append(t), clock=lambda: 1.0)
    sync.reconcile()
    sync.state.update("v", state="downloading", bytes_done=4096)
    # the rename happened, the state write did not (kill -9 in between)
    path = sync.library.file_path(item)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    sync.reconcile()
    assert sync.state.row("v")["state"] == "ready"  # type: ignore[index]
    assert events == ["cache_sync_done"]
    # and a ready item whose file vanished is queued again
    path.unlink()
    sync.reconcile()
    assert sync.state.row("v")["state"] == "queued"  # type: ignore[index]


def test_rotation_counts_every_line_once(tmp_path: Path) -> None:
    state = ContentState(open_db(tmp_path / "hub.db", CONTENT))
    state.add("a", 10, "0" * 64, pinned=False)
    srv = NginxServer(NginxPlan(tmp_path, tmp_path, ("127.0.0.1:1",), "u"))
    srv.access_log.write_text("1.0 200 1 GET /files/a/a\n")
    ingest(srv.access_log, state)
    with open(srv.access_log, "a") as f:  # written after the last read, before rotation
        f.write("2.0 200 1 GET /files/a/a\n")
    assert srv.rotate(rotate_at=10_000) is None  # small: stays
    old = srv.rotate(rotate_at=1)
    assert old is not None and not srv.access_log.exists()
    srv.access_log.write_text("3.0 200 1 GET /files/a/a\n")  # nginx reopened a fresh file
    ingest(old, state)  # the old file's tail, from the stored offset
    ingest(srv.access_log, state)
    ingest(srv.access_log, state)
    row = state.row("a")
    assert row is not None and row["hits"] == 3


def test_new_source_url_with_the_same_bytes_keeps_the_file(tmp_path: Path) -> None:
    data = os.urandom(3000)
    old = _item("v", data, url="http://old.example.test/v1.mp4")
    db = open_db(tmp_path / "hub.db", CONTENT)
    sync = ContentSync(_config(tmp_path, [old], sync_window="03:00-03:01"), db, clock=lambda: 1.0)
    sync.reconcile()
    part = sync.library.part_path("v")
    part.write_bytes(data)
    sync._ready(old, part, source="uplink")
    new = _item("v", data, url="http://cdn.example.test/videos/v1-final.mp4")
    sync.set_config(_config(tmp_path, [new], sync_window="03:00-03:01"))
    sync.reconcile()
    assert sync.state.row("v")["state"] == "ready"  # type: ignore[index]
    assert sync.library.file_path(new).read_bytes() == data
    index = json.loads(sync.library.index_path.read_text())
    assert index["items"][0]["href"] == "/files/v/v1-final.mp4"


def test_the_library_home_sends_each_family_to_its_portal_url(tmp_path: Path) -> None:
    """Real nginx on 127.0.0.1 and [::1]: "/" goes to the portal's URL in the family the
    client came in (an IPv6 client may have no IPv4 route to the hub)."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed (scripts/install-deps.sh installs it)")
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    port = free_port()
    (tmp_path / "content").mkdir()
    plan = NginxPlan(
        content_root=tmp_path / "content",
        run_dir=tmp_path / "run",
        listen=(f"127.0.0.1:{port}", f"[::1]:{port}"),
        portal_url="http://10.42.0.1:8080/content/",
        portal_url6="http://[fd42::1]:8080/content/",
    )
    srv = NginxServer(plan)
    srv.write()
    srv.start()
    try:
        for host, want in (("127.0.0.1", plan.portal_url), ("[::1]", plan.portal_url6)):
            deadline = time.monotonic() + 30  # nginx binds after start() returns
            while True:
                try:
                    r = httpx.get(f"http://{host}:{port}/", timeout=10)
                    break
                except httpx.TransportError:
                    assert srv.running() and time.monotonic() < deadline, "nginx did not answer"
                    time.sleep(0.02)  # a poll's pace, not a wait for a guessed time
            assert (r.status_code, r.headers["location"]) == (302, want)
    finally:
        srv.stop()
