"""Roaming on a real broker with the real controller ingest and balance desk: two hubs'
login paths, outboxes and MQTT links (no network namespaces: the kernel is a recorder;
lab/roaming.py). Use at hub A, log in at hub B, see the right balance; hub B
offline: a bounded allowance, reconciled when it comes back; a code the centre never
issued is refused online and is a finding."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from hub_agent.sessions.quota import MB
from hub_agent.sessions.vouchers import make_central_code, month_index
from lab.broker import Broker
from lab.roaming import Centre, Hub, hub_config
from provisioning import balances, registry

pytestmark = pytest.mark.root

PHONE_1, PHONE_2, PHONE_3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"


async def until(check: object, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def test_balance_follows_the_code_between_hubs(broker: Broker, tmp_path: Path) -> None:
    centre = Centre(tmp_path, broker.url)
    centre.start()
    a = Hub(hub_config(tmp_path, "hub-a", centre, broker.url))
    b = Hub(hub_config(tmp_path, "hub-b", centre, broker.url, offline_share_pct=25))

    async def scenario() -> None:
        await a.start()
        await b.start()
        now = time.time()
        # 1 GB day pass: 300 MB at hub A, then hub B sees 700 MB left
        day, hour = centre.issue("jour")[0], centre.issue("heure")[0]
        r = await a.login(PHONE_1, day)
        assert r.ok and r.device and r.device.session
        assert r.device.session.bytes_remaining == 1000 * MB
        a.use(PHONE_1, 300 * MB, now + 5)
        await until(lambda: centre.used(day) == 300 * MB)
        r = await b.login(PHONE_2, day)
        assert r.ok and r.device and r.device.session
        s = r.device.session
        assert s.bytes_remaining == 700 * MB
        assert b.kernel.grants[PHONE_2].quota_bytes == 700 * MB
        assert s.used_elsewhere and s.used_elsewhere[0].bytes == 300 * MB
        assert not s.balance_offline

        # a code the centre never issued (minted with the hubs' secret) is refused online
        forged = make_central_code(centre.secret.encode(), "heure", month_index(now), 99_999)
        r = await b.login(PHONE_3, forged)
        assert not r.ok and r.error == "unknown_code"

        # the 300 MB hour pass: 250 MB at hub A; hub B offline grants 25% (75 MB)
        r = await a.login(PHONE_3, hour)
        assert r.ok
        a.use(PHONE_3, 250 * MB, now + 10)
        await until(lambda: centre.used(hour) == 250 * MB)
        await b.stop()
        t0 = time.perf_counter()
        r = await b.login(PHONE_1, hour)
        assert time.perf_counter() - t0 < 0.3  # no waiting on a link that is down
        assert r.ok and r.device and r.device.session
        assert r.device.session.bytes_remaining == 75 * MB and r.device.session.balance_offline
        b.use(PHONE_1, 60 * MB, now + 20)
        # hub B comes back: its usage reaches the centre, its grant is reconciled (the
        # centre leaves 50 MB for it, 60 MB are used: nothing left, cut at the next pass)
        await b.start()
        await until(lambda: centre.used(hour) == 310 * MB)
        await until(lambda: b.kernel.grants[PHONE_1].quota_bytes == 0)
        v = await b.on_worker(lambda: b.sessions.session_view(PHONE_1, now + 30))
        assert v is not None and v.bytes_remaining == 0 and not v.balance_offline
        b.use(PHONE_1, 1, now + 31)
        assert PHONE_1 not in b.kernel.grants
        await a.stop()
        await b.stop()

    try:
        asyncio.run(scenario())
    finally:
        a.close()
        b.close()
        centre.stop()
    db = registry.open_registry(centre.db_path)
    found = {f.kind: f for f in balances.roaming_findings(db)}
    over = found["offline_overspend"]
    assert (over.used_bytes, over.over_bytes) == (310 * MB, 10 * MB)
    assert [h for h, _, _ in over.hubs] == ["hub-a", "hub-b"]
    assert [h for h, _, _ in found["never_issued"].hubs] == ["hub-b"]
