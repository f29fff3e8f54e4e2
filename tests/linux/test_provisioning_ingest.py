"""Controller ingest against a real Mosquitto: kill -9 loses nothing; shared members split.

The simulator (real MQTT clients, real broker) publishes health with contiguous seq per
hub; afterwards the registry must hold every sample exactly once, with no gap recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hub_agent.mqtt.core import BrokerUrl
from lab.broker import Broker
from lab.postgres import PgServer
from provisioning import registry, simulate
from provisioning.controller.service import Ingest

pytestmark = pytest.mark.root

BIN = Path(sys.executable).parent


def wait_complete(db_path: Path | str, sim: simulate.Simulator, timeout: float = 30) -> None:
    """Until every hub's samples 1..seq are stored (or fail with what is missing)."""
    deadline = time.monotonic() + timeout
    missing: dict[str, object] = {}
    db = registry.open_registry(db_path)
    while time.monotonic() < deadline:
        counts = registry.seq_counts(db)
        missing = {
            h.id: counts.get(h.id) for h in sim.hubs if counts.get(h.id) != (h.seq, 1, h.seq)
        }
        if not missing:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"samples missing for {len(missing)} hubs, e.g. {list(missing.items())[:3]}"
    )


def run_sim(sim: simulate.Simulator, seconds: float) -> threading.Thread:
    t = threading.Thread(target=sim.run, args=(seconds,), daemon=True)
    t.start()
    return t


def test_kill9_of_the_controller_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "central"
    db_path = state / "registry.db"
    hubs = simulate.fleet_ids(60)
    registry.register_many(registry.open_registry(db_path), hubs)
    env = dict(os.environ, RELAIS_CENTRAL_DIR=str(state), RELAIS_MQTT_URL=broker.url)
    cmd = [str(BIN / "hubctl"), "controller", "run", "--http-port", "0", "--client-id", "ctl-1"]

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert p.stderr is not None
        for line in p.stderr:  # wait for the subscription to exist
            if b"controller connected" in line:
                return p
        raise AssertionError("controller did not connect")

    ctl = start()
    sim = simulate.Simulator(BrokerUrl.parse(broker.url), hubs, rate=20, outage_pct=0)
    sim.start()
    t = run_sim(sim, 3.0)
    time.sleep(1.2)
    ctl.send_signal(signal.SIGKILL)  # mid-stream, mid-batch: no chance to flush
    ctl.wait()
    sent_while_down = sim.stats.health
    time.sleep(0.5)
    ctl = start()
    t.join()
    sim.finish()
    sim.close()
    assert sim.stats.health > sent_while_down > 0
    try:
        wait_complete(db_path, sim)
    finally:
        ctl.terminate()
        ctl.wait(timeout=10)
    db = registry.open_registry(db_path)
    assert db.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
    total = db.execute("SELECT count(*) FROM health").fetchone()[0]
    assert total == sum(h.seq for h in sim.hubs)  # each sample exactly once
    row = registry.get_hub(db, hubs[0].id)
    assert row is not None and row["last_seq"] == sim.hubs[0].seq  # summary repaired


def test_two_shared_controllers_split_the_load_and_store_everything_once(
    broker: Broker, central_db_url: str
) -> None:
    db_path = central_db_url
    hubs = simulate.fleet_ids(40)
    registry.register_many(registry.open_registry(db_path), hubs)
    url = BrokerUrl.parse(broker.url)
    members = [Ingest(db_path, url, shared=True, client_id=f"member-{i}") for i in range(2)]
    for m in members:
        m.start()
    try:
        sim = simulate.Simulator(url, hubs, rate=25, outage_pct=30)
        sim.start()
        sim.run(2.0)
        sim.finish()
        sim.close()
        wait_complete(db_path, sim)
        shares = [m.ingestor.counters.health for m in members]
        assert all(n > 0.2 * sum(shares) for n in shares), shares  # both took a real share
        assert sum(shares) == sum(h.seq for h in sim.hubs)
        # retained states reach every member (not shared), so both know every hub's state
        assert all(len(m.ingestor.hubs) >= len(hubs) for m in members)
    finally:
        for m in members:
            m.stop()


def test_a_broker_restart_mid_stream_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    db_path = tmp_path / "registry.db"
    hubs = simulate.fleet_ids(30)
    registry.register_many(registry.open_registry(db_path), hubs)
    url = BrokerUrl.parse(broker.url)
    ctl = Ingest(db_path, url, client_id="ctl-restart", summary_every_s=0.1)
    ctl.start()
    try:
        sim = simulate.Simulator(url, hubs, rate=10, outage_pct=0)
        sim.start()
        t = run_sim(sim, 3.0)
        time.sleep(1.0)
        broker.restart()  # persistence on: the controller's session and queue survive
        t.join()
        sim.finish()
        sim.close(timeout=30)
        wait_complete(db_path, sim)
        assert ctl.stats.reconnects >= 1  # it really lost the broker
        assert ctl.ingestor.counters.bad == 0
    finally:
        ctl.stop()


def test_two_controllers_on_postgresql_kill9_of_one_stores_every_seq_once(
    broker: Broker, tmp_path: Path, pg_server: PgServer
) -> None:
    """Two `hubctl controller run --shared` processes on one PostgreSQL database; one is
    killed -9 mid-stream and restarted under its id (as systemd does): every seq of every
    hub is stored exactly once, no gap is reported, and the housekeeping lease has one
    holder."""
    url = pg_server.new_database("two")
    hubs = simulate.fleet_ids(60)
    registry.register_many(registry.open_registry(url), hubs)
    env = dict(os.environ, RELAIS_CENTRAL_DIR=str(tmp_path / "central"),
               RELAIS_MQTT_URL=broker.url, RELAIS_CENTRAL_DB=url)  # fmt: skip

    def start(cid: str) -> subprocess.Popen[bytes]:
        cmd = [str(BIN / "hubctl"), "controller", "run", "--http-port", "0", "--shared",
               "--client-id", cid]  # fmt: skip
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert p.stderr is not None
        for line in p.stderr:
            if b"controller connected" in line:
                return p
        raise AssertionError(f"controller {cid} did not connect")

    ctls = {cid: start(cid) for cid in ("ctl-a", "ctl-b")}
    try:
        sim = simulate.Simulator(BrokerUrl.parse(broker.url), hubs, rate=20, outage_pct=20)
        sim.start()
        t = run_sim(sim, 3.0)
        time.sleep(1.2)
        ctls["ctl-a"].send_signal(signal.SIGKILL)
        ctls["ctl-a"].wait()
        ctls["ctl-a"] = start("ctl-a")  # its session kept what it had not acked
        t.join()
        sim.finish()
        sim.close()
        wait_complete(url, sim)
        db = registry.open_registry(url)
        total = db.execute("SELECT count(*) FROM health").fetchone()[0]
        assert total == sum(h.seq for h in sim.hubs)  # each sample exactly once
        assert db.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
        leases = db.execute("SELECT count(*) FROM controller_leases").fetchone()[0]
        assert leases == 1
    finally:
        for p in ctls.values():
            p.terminate()
            p.wait(timeout=10)


def test_a_batch_the_database_refuses_is_stored_once_it_takes_it(
    broker: Broker, tmp_path: Path
) -> None:
    """A commit that fails (here a trigger refuses sample 5) leaves its messages unacked;
    they come again after the reconnect and must then be stored. The reader must not keep
    the cursors it had advanced over the refused batch, nor let the writer commit batches
    built on them: the redelivered samples would look like duplicates and be dropped."""
    db_path = tmp_path / "registry.db"
    hubs = simulate.fleet_ids(1)
    db = registry.open_registry(db_path)
    registry.register_many(db, hubs)
    db.execute(
        "CREATE TRIGGER refuse_5 BEFORE INSERT ON health WHEN NEW.seq = 5"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    url = BrokerUrl.parse(broker.url)
    ctl = Ingest(db_path, url, client_id="ctl-refused", summary_every_s=0.1)
    ctl.start()
    try:
        sim = simulate.Simulator(url, hubs, rate=10, outage_pct=0)
        sim.start()
        t = run_sim(sim, 2.0)
        deadline = time.monotonic() + 30
        while ctl.stats.reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ctl.stats.reconnects >= 1, "the refused commit did not make it reconnect"
        db.execute("DROP TRIGGER refuse_5")
        t.join()
        sim.finish()
        sim.close(timeout=30)
        wait_complete(db_path, sim)
    finally:
        ctl.stop()
        db.close()
