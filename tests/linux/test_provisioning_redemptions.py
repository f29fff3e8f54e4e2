"""A central code redeemed on two hubs that were both offline is caught by the controller
when their outboxes drain: real broker, real controller ingest, hubs' real event payloads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub_agent.mqtt.core import BrokerUrl
from hub_agent.sessions.service import Redemption
from lab.broker import Broker
from provisioning import registry, vouchers
from provisioning.controller.service import Ingest
from provisioning.statedir import StateDir

pytestmark = pytest.mark.root


def test_double_redemption_on_two_offline_hubs_is_reported(broker: Broker, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "central")
    db_path = tmp_path / "central" / "registry.db"
    db = registry.open_registry(db_path)
    secret = vouchers.voucher_secret(state)
    plan = next(p for p in vouchers.catalogue().values() if p.devices_per_voucher == 1)
    batch = vouchers.issue_batch(db, secret, plan, 2, None, 3)
    shared, fine = batch.codes
    ingest = Ingest(db_path, BrokerUrl.parse(broker.url), client_id="ctl-test")
    ingest.start()
    hub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hubs")
    hub.connect(broker.host, broker.port)
    hub.loop_start()
    try:
        seqs: dict[str, int] = {}
        uses = [("hub-a", shared, "phone-1"), ("hub-b", shared, "phone-2"), ("hub-a", fine, "p3")]
        for hub_id, code, device in uses:
            seqs[hub_id] = seqs.get(hub_id, 0) + 1
            fields = Redemption(hub_id, code, device, time.time(), plan.id).as_event(b"k" * 32)
            payload = {"hub_id": hub_id, "seq": seqs[hub_id], "ts": time.time(), **fields}
            hub.publish(
                f"relais/hubs/{hub_id}/events", json.dumps(payload), qos=1
            ).wait_for_publish(5)
        deadline = time.monotonic() + 20

        def stored() -> int:  # every redemption, not only the one that made the finding
            reg = registry.open_registry(db_path)
            return len(reg.execute("SELECT 1 FROM central_redemptions").fetchall())

        while (ingest.stats.voucher_findings < 1 or stored() < len(uses)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
    finally:
        hub.loop_stop()
        hub.disconnect()
        ingest.stop()
    assert ingest.stats.voucher_findings == 1
    findings = vouchers.reconcile(registry.open_registry(db_path), [])
    assert findings == []  # nothing new: reconcile is idempotent over what is stored
    rows = (
        registry.open_registry(db_path)
        .execute("SELECT code, hub_id FROM central_redemptions ORDER BY hub_id, code")
        .fetchall()
    )
    assert sorted(rows) == sorted([(shared, "hub-a"), (shared, "hub-b"), (fine, "hub-a")])
