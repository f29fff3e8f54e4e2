"""Accounting pass over 1,000 active devices: time and CPU per pass vs a 10 s interval.

``SessionService.account`` on a real SQLite file (WAL, synchronous=FULL) with synthetic
kernel counters for 1,000 live voucher sessions, every device moving bytes each pass (the
worst case: every row is rewritten). Baseline, measured in the same run on the same file
layout: a bare SQLite loop writing the same 1,000 rows (one executemany UPDATE in one
transaction), i.e. the persistence any accounting design must pay.

Run: .venv/bin/python bench/bench_accounting.py
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from hub_agent.config import HubConfig, validate_config  # noqa: E402
from hub_agent.enforce.model import Counters  # noqa: E402
from hub_agent.sessions.db import open_sessions_db  # noqa: E402
from hub_agent.sessions.service import SessionService  # noqa: E402

DEVICES = 1000
PASSES = 30
INTERVAL_S = 10.0
TARGET_PCT = 2.0
T0 = 1_780_000_000.0


def config(data_dir: Path) -> HubConfig:
    data = yaml.safe_load((ROOT / "examples" / "hub.yaml").read_text())
    data["data_dir"] = str(data_dir)
    data["plans"][1]["data_quota_mb"] = 100_000  # nobody runs out during the run
    return validate_config(data)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    rnd = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hub.db"
        svc = SessionService(config(Path(tmp)), open_sessions_db(path))
        codes = svc.issue_local_vouchers("jour", DEVICES, T0)
        macs = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(DEVICES)]
        for i, (mac, code) in enumerate(zip(macs, codes, strict=True)):
            _view, err = svc.login(mac, f"10.42.{i // 250}.{i % 250 + 2}", "voucher", code, T0)
            assert err is None, err
        kernel = {m: [0, 0] for m in macs}

        walls, cpus = [], []
        for p in range(PASSES):
            for m in macs:
                kernel[m][0] += rnd.randint(1, 50_000)
                kernel[m][1] += rnd.randint(1, 500_000)
            counters = {m: Counters(m, u, d) for m, (u, d) in kernel.items()}
            now = T0 + (p + 1) * INTERVAL_S
            w, c = timed(lambda: svc.account(counters, now))  # noqa: B023
            walls.append(w)
            cpus.append(c)
        check = svc.conn.execute("SELECT count(*) FROM sessions WHERE state != 'ended'")
        assert check.fetchone()[0] == DEVICES, "sessions ended during the run"

        # Baseline: the bare writes, same file, same pragmas.
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        ids = [r[0] for r in conn.execute("SELECT id FROM sessions")]
        b_walls, b_cpus = [], []
        for p in range(PASSES):

            def bare(p: int = p) -> None:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "UPDATE sessions SET bytes_up = bytes_up + ?, bytes_down = bytes_down + ?, "
                    "last_kernel_up = ?, last_kernel_down = ? WHERE id = ?",
                    [(10, 20, p, p, i) for i in ids],
                )
                conn.execute("COMMIT")

            w, c = timed(bare)
            b_walls.append(w)
            b_cpus.append(c)
        conn.close()

    med = statistics.median
    wall, cpu, b_wall, b_cpu = med(walls), med(cpus), med(b_walls), med(b_cpus)
    cpu_pct = 100 * cpu / INTERVAL_S
    print(f"accounting pass, {DEVICES} active devices, {PASSES} passes (medians)")
    print(f"  SessionService.account : wall {wall * 1000:7.1f} ms   cpu {cpu * 1000:7.1f} ms")
    print(f"  baseline bare UPDATEs  : wall {b_wall * 1000:7.1f} ms   cpu {b_cpu * 1000:7.1f} ms")
    print(f"  ratio to baseline      : wall x{wall / b_wall:.1f}   cpu x{cpu / b_cpu:.1f}")
    print(
        f"  ratio to a {INTERVAL_S:.0f} s interval: cpu {cpu_pct:.2f}% of one core, "
        f"wall {100 * wall / INTERVAL_S:.2f}% (target <= {TARGET_PCT}% cpu): "
        f"{'OK' if cpu_pct <= TARGET_PCT else 'OVER'}"
    )


if __name__ == "__main__":
    main()
