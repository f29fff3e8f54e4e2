"""The content cache against a real upstream in the lab: sync, verify, resume, window, cap.

The sync runs inside the hub namespace (``ip netns exec``), fetching from the lab's
upstream HTTP server across the hub's uplink; the upstream's /stats says what really left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from lab.netns import Lab
from tests.linux.test_content_support import (
    ROOT,
    events,
    item,
    library_dir,
    put_upstream,
    run_sync,
    states,
    sync_args,
    upstream_sent,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.root


def test_corrupted_download_is_discarded_and_retried_never_served(lab: Lab, tmp_path: Path) -> None:
    good = os.urandom(700_000)
    bad = bytearray(good)
    bad[350_000] ^= 0xFF  # one flipped byte in transit / at the source
    url = put_upstream(lab, "guide.pdf", bytes(bad))
    cfg = write_config(tmp_path, [item("guide", url, good, kind="pdf")])

    ev = run_sync(lab, cfg, "--once", "--retry-base", "0.2")
    failed = [e for e in ev if e["type"] == "cache_sync_failed"]
    assert failed and failed[0]["reason"] == "sha256 mismatch"
    lib = library_dir(tmp_path)
    assert not (lib / "files" / "guide").exists()  # never visible
    assert not (lib / "partial" / "guide.part").exists()  # discarded, not resumed from
    assert '"guide"' not in (lib / "library.json").read_text()
    st = states(cfg)["guide"]
    assert st["state"] == "failed" and st["reason"] == "sha256 mismatch"

    put_upstream(lab, "guide.pdf", good)  # the source is repaired
    time.sleep(0.3)  # past the first backoff
    ev = run_sync(lab, cfg, "--once", "--retry-base", "0.2")
    assert [e["type"] for e in ev] == ["cache_sync_done"]
    assert (lib / "files" / "guide" / "guide.pdf").read_bytes() == good
    assert states(cfg)["guide"]["state"] == "ready"


def test_never_downloads_an_item_it_has_whole(lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    cfg = write_config(tmp_path, [item("v", put_upstream(lab, "v.mp4", data), data)])
    run_sync(lab, cfg, "--once")
    sent = upstream_sent(lab)
    assert sent == len(data)
    assert run_sync(lab, cfg, "--once") == []
    assert upstream_sent(lab) - sent < 200  # only the /stats answer itself


def test_cut_uplink_mid_download_resumes_without_refetching(lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(6_000_000)
    url = put_upstream(lab, "course.mp4", data)
    cfg = write_config(tmp_path, [item("course", url, data)], bandwidth_kbit=8000)  # ~1 MB/s
    part = library_dir(tmp_path) / "partial" / "course.part"
    chunk = 512 * 1024  # bytes per Range request: what a cut may cost at most
    args = sync_args(
        cfg, "--seconds", "40", "--read-timeout", "1", "--connect-timeout", "1",
        "--retry-base", "0.3", "--range-chunk", str(chunk),
    )  # fmt: skip
    proc = lab.spawn(lab.hub_ns, *args, log="sync.log")
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 2_000_000)
        lab.set_uplink(False)
        time.sleep(2.5)  # the read times out; retries fail to connect
        at_cut = part.stat().st_size
        assert at_cut < len(data)
        lab.set_uplink(True)
        final = library_dir(tmp_path) / "files" / "course" / "course.mp4"
        wait_for(final.exists, timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    assert final.read_bytes() == data
    log = (lab.workdir / "sync.log").read_text()
    assert "resuming at byte" in log
    st = states(cfg)["course"]
    sent = upstream_sent(lab)
    print(f"resume: fetched {st['bytes_fetched']}, upstream sent {sent}, size {len(data)}")
    # bytes that reached the hub over all attempts: nothing fetched twice
    assert len(data) <= st["bytes_fetched"] <= len(data) + chunk
    # what left the upstream, including what was lost in flight at the cut
    assert len(data) <= upstream_sent(lab) <= len(data) + chunk


def test_kill_9_mid_download_resumes_from_the_last_byte_on_disk(lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(4_000_000)
    cfg = write_config(
        tmp_path, [item("k", put_upstream(lab, "k.mp4", data), data)], bandwidth_kbit=8000
    )
    part = library_dir(tmp_path) / "partial" / "k.part"
    proc = lab.spawn(lab.hub_ns, *sync_args(cfg, "--seconds", "30"), log="sync1.log")
    wait_for(lambda: part.exists() and part.stat().st_size >= 1_500_000)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    on_disk = part.stat().st_size
    before = upstream_sent(lab)
    ev = run_sync(lab, cfg, "--once")
    assert [e["type"] for e in ev] == ["cache_sync_done"]
    assert (library_dir(tmp_path) / "files" / "k" / "k.mp4").read_bytes() == data
    # the second run asked only for what was missing (plus the tiny /stats answers)
    missing = len(data) - on_disk
    assert missing <= upstream_sent(lab) - before <= missing + 100


def _window_excluding_now() -> str:
    now = datetime.now(ZoneInfo("Africa/Lome"))
    start, end = now + timedelta(hours=2), now + timedelta(hours=4)
    return f"{start:%H:%M}-{end:%H:%M}"


def test_outside_the_window_nothing_is_fetched(lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    window = _window_excluding_now()
    cfg = write_config(
        tmp_path, [item("w", put_upstream(lab, "w.mp4", data), data)], sync_window=window
    )
    before = upstream_sent(lab)
    ev = run_sync(lab, cfg, "--seconds", "2", "--retry-base", "0.2")
    assert ev == []
    assert upstream_sent(lab) - before < 200  # the /stats answer only
    assert states(cfg)["w"]["state"] == "queued"
    assert not (library_dir(tmp_path) / "partial" / "w.part").exists()


def test_bandwidth_cap_holds_within_ten_percent(lab: Lab, tmp_path: Path) -> None:
    cap_kbit = 4000  # 500 kB/s
    data = os.urandom(4_500_000)
    cfg = write_config(
        tmp_path, [item("cap", put_upstream(lab, "cap.mp4", data), data)], bandwidth_kbit=cap_kbit
    )
    proc = lab.spawn(lab.hub_ns, *sync_args(cfg, "--seconds", "20"), log="cap.log")
    try:
        wait_for(lambda: wan_rx(lab) > 300_000)  # past the start-up burst
        b0, t0 = wan_rx(lab), time.monotonic()
        time.sleep(4.0)
        b1, t1 = wan_rx(lab), time.monotonic()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    # on the wire of the hub's uplink, TCP/IP headers included
    rate_bps = (b1 - b0) * 8 / (t1 - t0)
    print(f"cap {cap_kbit} kbit/s: measured {rate_bps / 1000:.0f} kbit/s on wan0")
    assert abs(rate_bps - cap_kbit * 1000) <= 0.10 * cap_kbit * 1000, rate_bps


def wan_rx(lab: Lab) -> int:
    p = lab.hub_exec("cat", "/sys/class/net/wan0/statistics/rx_bytes")
    return int(p.stdout)


def test_sync_emits_events_as_json_lines_for_the_centre(lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    cfg = write_config(tmp_path, [item("e", put_upstream(lab, "e.mp4", data), data)])
    p = subprocess.run(
        ["ip", "netns", "exec", lab.hub_ns, *sync_args(cfg, "--once")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    (ev,) = events(p.stdout)
    assert ev == {"type": "cache_sync_done", "item": "e", "size": len(data), "source": "uplink"}
