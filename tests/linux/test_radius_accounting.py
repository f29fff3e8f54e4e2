"""Accounting against a real FreeRADIUS: Start, Interim-Update and Stop land in its detail
file with the counts sent (gigawords past 4 GiB); records queued while the server is down,
or left by an agent killed with -9, are delivered later."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub_agent.radius import AccountingSender, Journal, Nas, RadiusClient, SessionStart
from hub_agent.store import connect
from lab.radius import FreeRadius, hub_config, require_freeradius

GIB = 1 << 32
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def radius() -> Iterator[FreeRadius]:
    require_freeradius()
    with FreeRadius() as r:
        yield r


def _setup(r: FreeRadius, db_path: Path) -> tuple[Journal, AccountingSender]:
    config = hub_config(("127.0.0.1", r.auth_port, r.acct_port), timeout_s=0.3, retries=0)
    client = RadiusClient(config)
    journal = Journal(connect(db_path), Nas.from_config(config))
    return journal, AccountingSender(journal, client.account)


async def _until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _session(sid: str) -> SessionStart:
    return SessionStart(sid, "alice", "02:00:00:00:00:01", "10.42.0.100", (b"alice-class",), 120)


def test_start_interim_stop_reach_the_detail_file(radius: FreeRadius, tmp_path: Path) -> None:
    journal, sender = _setup(radius, tmp_path / "hub.db")
    t0 = time.time() - 600  # a session that began ten minutes ago
    journal.start(_session("S-1"), now=t0)
    assert not journal.observe("S-1", 1000, 2000, now=t0 + 60)  # not due yet
    assert journal.observe("S-1", 5 * GIB + 123, 1234, now=t0 + 120)
    journal.stop("S-1", 5 * GIB + 456, GIB + 7, "idle", now=t0 + 300)
    asyncio.run(sender.pass_once())
    assert journal.pending() == []

    recs = [r for r in radius.records() if r.get("Acct-Session-Id") == "S-1"]
    assert [r["Acct-Status-Type"] for r in recs] == ["Start", "Interim-Update", "Stop"]
    start, interim, stop = recs
    assert start["User-Name"] == "alice"
    assert start["Calling-Station-Id"] == "02-00-00-00-00-01"
    assert start["NAS-Identifier"] == "tg-demo-mairie-01"
    assert start["Class"] == "0x" + b"alice-class".hex()
    assert (interim["Acct-Input-Gigawords"], interim["Acct-Input-Octets"]) == ("5", "123")
    assert (interim["Acct-Output-Gigawords"], interim["Acct-Output-Octets"]) == ("0", "1234")
    assert interim["Acct-Session-Time"] == "120"
    assert (stop["Acct-Input-Gigawords"], stop["Acct-Input-Octets"]) == ("5", "456")
    assert (stop["Acct-Output-Gigawords"], stop["Acct-Output-Octets"]) == ("1", "7")
    assert stop["Acct-Session-Time"] == "300"
    assert stop["Acct-Terminate-Cause"] == "Idle-Timeout"
    assert int(stop["Acct-Delay-Time"]) >= 299  # recorded 5 min ago, sent now


def test_records_queued_while_the_server_is_down_are_delivered(
    radius: FreeRadius, tmp_path: Path
) -> None:
    journal, sender = _setup(radius, tmp_path / "hub.db")
    radius.stop()

    async def scenario() -> None:
        task = asyncio.create_task(sender.run())
        journal.start(_session("S-2"))
        journal.stop("S-2", 10, 20, "logout")
        await _until(lambda: any(p.tries > 0 for p in journal.pending()))
        assert sender.sent == 0
        radius.start()
        await _until(lambda: not journal.pending())
        task.cancel()

    asyncio.run(scenario())
    recs = [r for r in radius.records() if r.get("Acct-Session-Id") == "S-2"]
    assert [r["Acct-Status-Type"] for r in recs] == ["Start", "Stop"]
    assert recs[1]["Acct-Terminate-Cause"] == "User-Request"


AGENT = """
import sys, time
from hub_agent.radius import Journal, Nas, SessionStart
from hub_agent.store import connect
from lab.radius import hub_config
j = Journal(connect(sys.argv[1]), Nas.from_config(hub_config(("127.0.0.1", 9, 9))))
j.start(SessionStart("S-3", "alice", "02:00:00:00:00:01", None))
j.stop("S-3", 3 * 2**32, 5, "data_quota")
print("recorded", flush=True)
time.sleep(60)
"""


def test_records_survive_kill_9(radius: FreeRadius, tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "recorded"
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)

    journal, sender = _setup(radius, db)  # the restarted agent
    assert [p.status for p in journal.pending()] == ["Start", "Stop"]
    asyncio.run(sender.pass_once())
    recs = [r for r in radius.records() if r.get("Acct-Session-Id") == "S-3"]
    assert [r["Acct-Status-Type"] for r in recs] == ["Start", "Stop"]
    assert recs[1]["Acct-Input-Gigawords"] == "3"
    assert recs[1]["Acct-Terminate-Cause"] == "Session-Timeout"
