"""Roaming login (centre reachable) against a local-code login, in the same run.

A real Mosquitto, the real controller ingest and balance desk, one hub's real login path
(``AgentHandler`` + ``RoamingLink`` + ``SessionService`` on SQLite, the telemetry's MQTT
link; the kernel is a recorder, as in tests/linux/test_roaming_lab.py). Each login is a
new device: a central code (the hub asks the centre, waits for the signed answer, then
the login's transaction) or a hub-local code (no centre). Logins alternate so both see the
same machine state. Targets: roaming p99 <= 2x local p99, and <= 300 ms.

Run: .venv/bin/python bench/bench_roaming.py [--logins N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.broker import Broker
from lab.firstpacket import pct
from lab.roaming import Centre, Hub, hub_config


async def run(hub: Hub, central: list[str], local: list[str]) -> tuple[list[float], list[float]]:
    await hub.start()
    assert hub.roaming is not None
    roam: list[float] = []
    loc: list[float] = []
    for i, (c, lc) in enumerate(zip(central, local, strict=True)):
        for code, out, mac in ((c, roam, f"02:00:00:01:{i // 256:02x}:{i % 256:02x}"),
                               (lc, loc, f"02:00:00:02:{i // 256:02x}:{i % 256:02x}")):  # fmt: skip
            t = time.perf_counter()
            r = await hub.login(mac, code)
            out.append((time.perf_counter() - t) * 1000)
            assert r.ok, r.error
    timeouts = hub.roaming.timeouts
    await hub.stop()
    assert timeouts == 0, f"{timeouts} balance queries timed out"
    return roam, loc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logins", type=int, default=300)
    n = ap.parse_args().logins
    tmp = Path(tempfile.mkdtemp(prefix="relais-bench-roaming-"))
    with Broker() as broker:
        centre = Centre(tmp, broker.url)
        centre.start()
        hub = Hub(hub_config(tmp, "hub-bench", centre, broker.url, report_every_s=60))
        try:
            central = centre.issue("heure", n)
            local = hub.sessions.issue_local_vouchers("heure", n, time.time())
            roam, loc = asyncio.run(run(hub, central, local))
        finally:
            hub.close()
            centre.stop()
    r99, l99 = pct(roam, 0.99), pct(loc, 0.99)
    print(f"logins: {n} roaming (centre reachable) + {n} local, alternating")
    print(f"local    login: median {statistics.median(loc):6.2f} ms  p99 {l99:6.2f} ms")
    print(f"roaming  login: median {statistics.median(roam):6.2f} ms  p99 {r99:6.2f} ms")
    ratio = r99 / l99 if l99 else float("inf")
    ok = ratio <= 2.0 and r99 <= 300
    print(f"p99 ratio roaming/local: {ratio:.2f} (target <= 2.0); roaming p99 {r99:.1f} ms "
          f"(target <= 300 ms): {'OK' if ok else 'MISSED'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
