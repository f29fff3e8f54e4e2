"""The fleet simulator's hubs (pure parts): Togo's kind mix, contiguous seq, day curves."""

from __future__ import annotations

import random
from collections import Counter

from provisioning.simulate import SimHub, fleet_ids


def test_fleet_mix_regions_and_positions() -> None:
    hubs = fleet_ids(1877)
    kinds = Counter(h.kind for h in hubs)
    assert kinds == {"school": 1488, "clinic": 253, "mairie": 136}
    assert len({h.id for h in hubs}) == 1877
    assert {h.region for h in hubs} == {"Maritime", "Plateaux", "Centrale", "Kara", "Savanes"}
    assert all(h.lat is not None and 5.8 < h.lat < 11.3 for h in hubs)


def test_samples_have_contiguous_seq_and_follow_the_school_day() -> None:
    hub = SimHub("sim-x", "school", random.Random(1))
    noon, night = 12 * 3600.0, 2 * 3600.0
    day = [hub.sample(noon + i) for i in range(50)]
    nights = [hub.sample(night + i) for i in range(50)]
    assert [s["seq"] for s in day + nights] == list(range(1, 101))
    assert sum(s["dev"] for s in day) > 3 * sum(s["dev"] for s in nights)
    assert all(0 <= s["cpu"] <= 100 and s["hub_id"] == "sim-x" for s in day)
    assert day[-1]["srv"] >= day[0]["srv"]  # data served today only grows
