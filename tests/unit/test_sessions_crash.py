"""kill -9 in the middle of accounting loses nothing and counts nothing twice.

A child process runs the real accounting loop (SessionService.account on the real SQLite
file, WAL, synchronous=FULL) over kernel counters the test publishes in a file; the test
SIGKILLs it at random moments, many times, while the counters grow (and once restart from
zero, as after a reboot), then checks every device's stored usage against the exact bytes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService
from tests.unit.test_sessions_service import make_config

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 200

CHILD = """
import json, sys, time
from pathlib import Path
from hub_agent.enforce.model import Counters
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService
from tests.unit.test_sessions_service import make_config

tmp = Path(sys.argv[1])
svc = SessionService(make_config(tmp), open_sessions_db(tmp / "hub.db"))
while True:
    raw = json.loads((tmp / "kernel.json").read_text())
    svc.account({m: Counters(m, u, d) for m, (u, d) in raw.items()})
    print("pass", flush=True)
"""


def _publish(tmp: Path, kernel: dict[str, list[int]]) -> None:
    part = tmp / "kernel.json.tmp"
    part.write_text(json.dumps(kernel))
    os.replace(part, tmp / "kernel.json")


def _spawn(tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _caught_up(tmp: Path, kernel: dict[str, list[int]]) -> bool:
    with sqlite3.connect(tmp / "hub.db") as db:
        rows = db.execute(
            "SELECT mac, last_kernel_up, last_kernel_down FROM sessions WHERE state != 'ended'"
        ).fetchall()
    return {m: [u, d] for m, u, d in rows} == kernel


def _run_until_caught_up(tmp: Path, kernel: dict[str, list[int]]) -> None:
    child = _spawn(tmp)
    try:
        deadline = time.monotonic() + 30
        while not _caught_up(tmp, kernel):
            assert time.monotonic() < deadline, "accounting never caught up"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_kill_minus_nine_mid_accounting_keeps_usage_exact(tmp_path: Path) -> None:
    rnd = random.Random(9)
    now = time.time()
    svc = SessionService(make_config(tmp_path), open_sessions_db(tmp_path / "hub.db"))
    codes = svc.issue_local_vouchers("heure", DEVICES, now)
    macs = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(DEVICES)]
    for mac, code in zip(macs, codes, strict=True):
        assert svc.login(mac, None, "voucher", code, now)[1] is None
    svc.db.conn.close()

    kernel = {m: [0, 0] for m in macs}
    truth = dict.fromkeys(macs, 0)
    _publish(tmp_path, kernel)
    kills = passes = 0
    for round_ in range(16):
        if round_ == 8:
            # A reboot: the kernel state is recreated (counters back to 0) and the agent's
            # first pass sees it before a device has moved as many bytes as before.
            _run_until_caught_up(tmp_path, kernel)
            kernel = {m: [0, 0] for m in macs}
            _publish(tmp_path, kernel)
            _run_until_caught_up(tmp_path, kernel)
        child = _spawn(tmp_path)
        assert child.stdout is not None
        assert child.stdout.readline() == "pass\n"  # running: from now on, kill at random
        for _ in range(rnd.randint(1, 6)):
            for m in rnd.sample(macs, 40):
                up, down = rnd.randint(0, 40_000), rnd.randint(0, 400_000)
                kernel[m][0] += up
                kernel[m][1] += down
                truth[m] += up + down
            _publish(tmp_path, kernel)
            time.sleep(rnd.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        child.wait()
        passes += 1 + child.stdout.read().count("pass")
        child.stdout.close()
        kills += 1
    _run_until_caught_up(tmp_path, kernel)

    assert kills == 16 and passes > kills  # the loop really ran between kills
    with sqlite3.connect(tmp_path / "hub.db") as db:
        stored = dict(db.execute("SELECT mac, bytes_up + bytes_down FROM sessions").fetchall())
        daily = db.execute("SELECT sum(bytes) FROM usage_daily").fetchone()[0]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert stored == truth  # nothing lost, nothing counted twice, device by device
    assert daily == sum(truth.values())
