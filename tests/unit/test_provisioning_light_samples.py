"""Hubs send slow-moving health fields on every N-th sample only (uplink cost); the
controller's view of a hub keeps them from the last full sample."""

from __future__ import annotations

import json

from provisioning.controller.ingest import Ingestor


def _sample(seq: int, **fields: object) -> bytes:
    return json.dumps({"hub_id": "hub-a", "seq": seq, "ts": 1000.0 + seq, **fields}).encode()


def test_light_samples_update_the_last_full_one() -> None:
    ing = Ingestor()
    topic = "relais/hubs/hub-a/health"
    ing.add(topic, _sample(1, up=3600, dsk=41, cpu=12, mem=50), now=1001.0)
    ing.add(topic, _sample(2, cpu=80, mem=55), now=1002.0)  # light: no uptime, no disk
    batch = ing.take()
    last = json.loads(batch.hub_updates["hub-a"]["last_health"])
    assert (last["seq"], last["cpu"], last["mem"]) == (2, 80, 55)
    assert (last["up"], last["dsk"]) == (3600, 41)
    stored = [json.loads(data) for _, _, _, data in batch.health]
    assert "up" not in stored[1]  # each sample is stored as sent
    ing.add(topic, _sample(3, up=3660, dsk=42, cpu=5, mem=40), now=1003.0)
    last = json.loads(ing.take().hub_updates["hub-a"]["last_health"])
    assert (last["up"], last["dsk"], last["cpu"]) == (3660, 42, 5)
