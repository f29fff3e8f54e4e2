"""The library served on the hub: nginx (Range, ETag), hits counted, budget, USB, kiwix.

A lab client fetches from the hub's LAN address exactly as a phone would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from hub_agent.content.kiwix import kiwix_binary
from lab.netns import Lab
from tests.linux.test_content_support import (
    Serving,
    curl,
    item,
    library_dir,
    make_zim,
    put_upstream,
    report,
    run_sync,
    states,
    upstream_sent,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.root


def test_synced_item_is_listed_and_served_with_range_etag_and_counted(
    lab: Lab, tmp_path: Path
) -> None:
    data = os.urandom(1_500_000)
    url = put_upstream(lab, "cours.mp4", data)
    cfg = write_config(tmp_path, [item("cours", url, data)])
    assert [e["type"] for e in run_sync(lab, cfg, "--once")] == ["cache_sync_done"]
    index = (library_dir(tmp_path) / "library.json").read_text()
    assert '"href": "/files/cours/cours.mp4"' in index

    c = lab.clients[0]
    with Serving(lab, cfg) as srv:
        # video seeking: a byte range
        part = tmp_path / "part.bin"
        r = curl(c, "/files/cours/cours.mp4", "-r", "1000-1999", "-o", str(part),
                 "-D", "-", "-w", "%{http_code}")  # fmt: skip
        assert r.stdout.endswith("206"), r.stdout
        assert "Content-Range: bytes 1000-1999/1500000" in r.stdout
        assert "Content-Type: video/mp4" in r.stdout
        assert part.read_bytes() == data[1000:2000]
        # the whole file, then a revalidation by ETag
        whole = tmp_path / "whole.bin"
        r = curl(c, "/files/cours/cours.mp4", "-o", str(whole), "-D", "-")
        assert hashlib.sha256(whole.read_bytes()).digest() == hashlib.sha256(data).digest()
        etag = next(
            line.split(":", 1)[1].strip()
            for line in r.stdout.splitlines()
            if line.lower().startswith("etag:")
        )
        r = curl(c, "/files/cours/cours.mp4", "-H", f"If-None-Match: {etag}",
                 "-o", "/dev/null", "-w", "%{http_code}")  # fmt: skip
        assert r.stdout == "304"
        # something not in the library: a miss
        r = curl(c, "/files/absent/x.pdf", "-o", "/dev/null", "-w", "%{http_code}")
        assert r.stdout == "404"
        # a partial download is never reachable
        r = curl(c, "/partial/cours.part", "-o", "/dev/null", "-w", "%{http_code}")
        assert r.stdout == "404"
        wait_for(lambda: report(cfg)["hits"] >= 3, timeout=15)
        srv.stop()
    rep = report(cfg)
    (st,) = rep["items"]
    assert st["hits"] == 3
    assert st["bytes_served"] == 1000 + len(data)  # the 304 sent no body
    assert rep["misses"] == 1
    assert rep["hit_ratio"] == 0.75
    assert st["last_used"] is not None


def test_budget_pinned_survive_least_used_go_first_oversize_refused(
    lab: Lab, tmp_path: Path
) -> None:
    blobs = {k: os.urandom(n) for k, n in
             (("p", 1_500_000), ("a", 1_000_000), ("b", 1_000_000), ("c", 1_000_000))}  # fmt: skip
    huge = os.urandom(4_500_000)
    urls = {k: put_upstream(lab, f"{k}.mp4", v) for k, v in blobs.items()}
    items = [
        item("p", urls["p"], blobs["p"], pinned=True),
        item("a", urls["a"], blobs["a"]),
        item("b", urls["b"], blobs["b"]),
    ]
    cfg = write_config(tmp_path, items, budget_mb=4)  # 4,000,000 bytes
    run_sync(lab, cfg, "--once")
    assert {k: v["state"] for k, v in states(cfg).items()} == dict.fromkeys("pab", "ready")

    # "a" is used (fetched by a phone), "b" is not: b is now the least recently used
    with Serving(lab, cfg) as srv:
        r = curl(lab.clients[0], "/files/a/a.mp4", "-o", "/dev/null", "-w", "%{http_code}")
        assert r.stdout == "200"
        wait_for(lambda: states(cfg)["a"]["hits"] == 1, timeout=15)
        srv.stop()

    items += [item("c", urls["c"], blobs["c"]),
              item("huge", put_upstream(lab, "huge.mp4", huge), huge)]  # fmt: skip
    cfg = write_config(tmp_path, items, budget_mb=4)
    ev = run_sync(lab, cfg, "--once")
    refused = [e for e in ev if e.get("refused")]
    assert refused == [
        {"type": "cache_sync_failed", "item": "huge", "refused": "oversize",
         "reason": "larger than the disk budget", "size": len(huge), "budget": 4_000_000}
    ]  # fmt: skip
    assert {"type": "cache_item_evicted", "item": "b", "for_item": "c"} in ev
    st = states(cfg)
    assert {k: v["state"] for k, v in st.items()} == {
        "p": "ready", "a": "ready", "b": "evicted", "c": "ready", "huge": "failed",
    }  # fmt: skip
    assert st["huge"]["reason"].startswith("oversize")
    files = library_dir(tmp_path) / "files"
    assert sorted(d.name for d in files.iterdir()) == ["a", "c", "p"]
    assert report(cfg)["used_bytes"] <= 4_000_000
    # the huge item was never fetched: nothing of it left the upstream
    sent_total = upstream_sent(lab)
    assert sent_total < sum(len(v) for v in blobs.values()) + 1000


def test_usb_folder_import_takes_matching_files_without_the_uplink(
    lab: Lab, tmp_path: Path
) -> None:
    data = os.urandom(800_000)
    decoy = os.urandom(800_000)  # same size, other bytes: must not be taken
    usb = tmp_path / "usb"
    (usb / "films").mkdir(parents=True)
    (usb / "films" / "copie.mp4").write_bytes(data)
    (usb / "autre.mp4").write_bytes(decoy)
    # the window is closed: only the import can bring it
    cfg = write_config(
        tmp_path,
        [item("film", "http://198.51.100.1/film.mp4", data)],
        usb_import_dir=str(usb),
        sync_window="03:00-03:01",
    )
    before = upstream_sent(lab)
    ev = run_sync(lab, cfg, "--once")
    done = {"type": "cache_sync_done", "item": "film", "size": len(data), "source": "import"}
    assert ev == [done]
    assert upstream_sent(lab) - before < 200
    assert (library_dir(tmp_path) / "files" / "film" / "film.mp4").read_bytes() == data
    assert (usb / "films" / "copie.mp4").exists()  # copied, the stick is left as it was


@pytest.mark.skipif(
    kiwix_binary() is None or shutil.which("zimwriterfs") is None,
    reason="needs kiwix-tools and zim-tools (scripts/install-deps.sh installs them)",
)
def test_zim_is_browsable_through_kiwix_under_wiki(lab: Lab, tmp_path: Path) -> None:
    zim = make_zim(tmp_path, "Lomé est la capitale du Togo.")
    cfg = write_config(
        tmp_path, [item("wiki", put_upstream(lab, "wiki.zim", zim), zim, kind="zim")]
    )
    run_sync(lab, cfg, "--once")
    assert '"wiki": "/wiki/"' in (library_dir(tmp_path) / "library.json").read_text()
    with Serving(lab, cfg):
        c = lab.clients[0]

        def article() -> str:
            return curl(c, "/wiki/wiki/", "-L").stdout

        wait_for(lambda: "capitale du Togo" in article(), timeout=15, every=0.2)
        # the raw file is still a plain download
        r = curl(c, "/files/wiki/wiki.zim", "-o", "/dev/null", "-w", "%{http_code} %{content_type}")
        assert r.stdout == "200 application/x-zim"
