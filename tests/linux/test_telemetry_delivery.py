"""Store-and-forward against a real Mosquitto: broker outage, agent kill -9, Last Will.

Delivery semantics under test: **at least once, duplicates removable by seq** — the
subscriber must see every seq from 1 to the last one; repeats are allowed (and counted).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils

from hub_agent.telemetry.service import Telemetry
from lab.broker import Broker
from tests.conftest import require_mosquitto
from tests.linux.test_telemetry_lab import (
    Collector,
    hub_config,
    load,
    retained,
    secure_broker,
    seqs,
    until,
)

pytestmark = pytest.mark.root


def _complete(got: list[int], last: int) -> bool:
    return last > 0 and set(got) >= set(range(1, last + 1))


def _queued_up_to(tel: Telemetry, seq: int) -> int:
    q = "SELECT count(*) FROM outbox WHERE kind = 'health' AND seq <= ?"
    return int(tel.outbox.db.execute(q, [seq]).fetchone()[0])


def test_no_sample_lost_across_a_broker_outage(broker: Broker, tmp_path: Path) -> None:
    require_mosquitto()
    secure_broker(broker)
    col = Collector(broker, ["relais/hubs/+/health", "relais/hubs/+/events"])
    cfg = load(tmp_path, broker)

    async def run() -> tuple[int, int, float]:
        tel = Telemetry(cfg, interval_s=0.02, probe=None)
        await tel.start()
        assert await until(lambda: len(col.on("/health")) >= 20)
        broker.stop()  # the uplink is down; samples pile up in the outbox
        before = tel.outbox.last_seq("health")
        # Down until the link's retries have reached the backoff cap (6 failed tries:
        # ~8-13 s). Issue 14 saw a 60 s outage; this one is shorter to keep the suite fast,
        # and long enough: uncapped doubling would be 16-32 s per try by now, so the 10 s
        # bound below fails without the cap.
        assert await until(lambda: tel.link.status.failures >= 6, 40), tel.status()
        assert await until(lambda: tel.outbox.depth()["health"] >= 130, 30)
        during = tel.outbox.last_seq("health") - before
        broker.start()
        back = time.monotonic()
        # Issue 14: the first sample queued during the outage reaches the centre within
        # 10 s of the broker's return.
        arrived = await until(lambda: before + 1 in seqs(col.on("/health")), 10)
        waited = time.monotonic() - back
        assert arrived and waited <= 10, f"backlog started {waited:.1f} s after the broker"
        drained = tel.outbox.last_seq("health")  # everything queued until the reconnect
        assert await until(lambda: _queued_up_to(tel, drained) == 0, 30), tel.status()
        await tel.stop()
        return during, tel.outbox.last_seq("health"), waited

    during, last, waited = asyncio.run(run())
    assert during >= 100, f"the outage covered only {during} samples"
    assert col.wait_for(lambda: _complete(seqs(col.on("/health")), last), 20)
    got = seqs(col.on("/health"))
    missing = set(range(1, last + 1)) - set(got)
    assert not missing, f"lost samples: {sorted(missing)[:20]}"
    assert max(got) == last
    first_seen = list(dict.fromkeys(got))
    assert first_seen == sorted(first_seen), "the backlog must drain oldest first"
    # Events went through the same outbox: agent_start and agent_stop, in order.
    assert col.wait_for(lambda: len(col.on("/events")) >= 2)
    types = [e["type"] for e in col.on("/events")]
    assert types[0] == "agent_start" and types[-1] == "agent_stop"
    print(
        f"outage covered {during} samples; first queued one at the centre {waited:.1f} s"
        f" after the broker came back; {len(got) - len(set(got))} duplicates of {last}"
    )
    col.close()


def _agent(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub_agent.telemetry", "--config", str(config), *extra],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _queued(db_file: Path) -> int:
    db = sqlite_utils.Database(db_file)
    try:
        return int(db.execute("SELECT count(*) FROM outbox WHERE kind='health'").fetchone()[0])
    except sqlite3.OperationalError:  # the agent has not created its tables yet
        return 0
    finally:
        db.conn.close()


def _last_seq(db_file: Path) -> int:
    db = sqlite_utils.Database(db_file)
    try:
        row = db.execute("SELECT last FROM outbox_seq WHERE kind='health'").fetchone()
        return int(row[0]) if row else 0
    finally:
        db.conn.close()


def test_no_sample_lost_when_the_agent_is_killed_mid_drain(broker: Broker, tmp_path: Path) -> None:
    require_mosquitto()
    secure_broker(broker)
    col = Collector(broker, ["relais/hubs/+/health"])
    # A bounded drain (300 msgs/s) so that the kill lands in the middle of it.
    path = hub_config(tmp_path, broker)
    text = path.read_text().replace("drain_rate_per_s: 10000", "drain_rate_per_s: 300")
    path.write_text(text)
    db_file = tmp_path / "data-hub-a" / "hub.db"

    broker.stop()
    agent = _agent(path, "--interval", "0.01", "--no-probe")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not db_file.exists() or _queued(db_file) < 400):
        time.sleep(0.1)
    assert _queued(db_file) >= 400, "agent did not queue samples while the broker was down"
    broker.start()
    # The agent's next try is at most the 5 s backoff cap away (hub_agent.mqtt.core).
    assert col.wait_for(lambda: len(col.on("/health")) >= 100, 15), "drain did not start"
    agent.send_signal(signal.SIGKILL)  # mid-drain: hundreds still queued
    agent.wait(5)
    queued_at_kill = _queued(db_file)
    assert queued_at_kill > 100, f"the kill was not mid-drain ({queued_at_kill} left)"
    last_at_kill = _last_seq(db_file)

    agent = _agent(path, "--interval", "0.05", "--no-probe")
    try:  # the restarted agent sends what the killed one left behind
        assert col.wait_for(lambda: _complete(seqs(col.on("/health")), last_at_kill), 30)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=15)
    assert agent.returncode == 0, err.decode()[-2000:]
    last = _last_seq(db_file)
    assert col.wait_for(lambda: _complete(seqs(col.on("/health")), last), 20)
    got = seqs(col.on("/health"))
    assert set(got) == set(range(1, last + 1)), "a sample was lost or invented"
    print(f"killed with {queued_at_kill} queued; {len(got) - len(set(got))} duplicates of {last}")
    col.close()


def test_last_will_marks_a_killed_agent_offline(broker: Broker, tmp_path: Path) -> None:
    require_mosquitto()
    secure_broker(broker)
    path = hub_config(tmp_path, broker)
    agent = _agent(path, "--no-probe")
    try:
        deadline = time.monotonic() + 15
        online = None
        while time.monotonic() < deadline:
            online = retained(broker, "relais/hubs/hub-a/state", timeout=0.5)
            if online and online.get("online"):
                break
        assert online and online["online"] is True, online
    finally:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(5)
    deadline = time.monotonic() + 15
    state = online
    while time.monotonic() < deadline and state and state["online"]:
        state = retained(broker, "relais/hubs/hub-a/state", timeout=0.5)
    assert state is not None and state["online"] is False
    assert state["session"] == online["session"], "the will must name the session it ends"
