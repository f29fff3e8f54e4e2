"""Paid-to-online: from the provider simulator's callback to the device's first packet
through the hub, over real processes (lab/paylab.py: portal, agent, Mosquitto with
enroll's ACL, `hubctl payments run`, the simulator), beside the hub's voucher
login -> first packet measured in the same run.

200 purchases, 20 at once (20 phones, 10 rounds; T-Money/PayGate and Flooz/FedaPay
alternate). For each: the phone buys through the portal's form, the simulator has the
payment, a prober in the phone's namespace starts (a TCP connect to upstream :443 every 10 ms;
the hub resets it while the device is captive, so the portal is not loaded by it),
then t0 and the phone confirms (the simulator sends its callback at once); latency = the
prober's first upstream answer - t0. Then the phone logs out for the next round. The
voucher baseline: 3 rounds of 20 voucher logins (t0 just before POST /login).

Prints p50/p99 of both, the ratios, and lost/doubled purchases (centre rows not
delivered, hub grant rows, provider prompts, sessions). Target: p99 <= 2 s, 0 lost or
doubled. Benches print; they do not assert timing.

Run as root: .venv/bin/python bench/bench_paid_to_online.py [--purchases 200] [--at-once 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.firstpacket import first_packet, login_to_packet, logout, pct, start_probe
from lab.netns import Client
from lab.paylab import BIN, PayLab, wait_for
from provisioning.statedir import StateDir


@dataclass(frozen=True)
class Bought:
    ref: str  # the centre's reference
    t0: float  # the phone confirms (the simulator's callback leaves at once)
    t1: float | None  # the first packet through the hub


def purchase(pl: PayLab, c: Client, n: int) -> Bought:
    phone = ("90" if n % 2 == 0 else "96") + f"{n:06d}"
    pl.buy(c, phone, "")
    sp = pl.sim_payment(phone, timeout=30)
    probe = start_probe(c)
    t0 = time.time()
    pl.play("confirm", ref=sp["ref"])
    t1 = first_packet(probe)
    logout(c)
    return Bought(sp["ref"], t0, t1)


STAGES = ("confirm -> centre records paid", "paid -> grant recorded and sent",
          "grant -> hub's worker applies it", "applied -> first packet")  # fmt: skip


def stages(pl: PayLab, bought: list[Bought]) -> list[list[float]]:
    """Per stage, the seconds each purchase spent there, from the centre's payment_log
    and the hub's purchase_grants (one clock: same machine)."""
    log: dict[tuple[str, str], float] = {}
    by: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(StateDir(pl.central).registry_path)) as db:
        for ref, event, at, detail in db.execute("SELECT ref, event, at, detail FROM payment_log"):
            log[(ref, event)] = float(at)
            if event == "paid":
                by[detail.partition(":")[0]] = by.get(detail.partition(":")[0], 0) + 1
    print(f"  paid found by: {by}")
    applied = dict(pl.hub_query("SELECT ref, applied_at FROM purchase_grants"))
    out: list[list[float]] = [[] for _ in STAGES]
    for b in bought:
        marks = [b.t0, log.get((b.ref, "paid")), log.get((b.ref, "granted")),
                 applied.get(b.ref), b.t1]  # fmt: skip
        for i in range(len(STAGES)):
            start, end = marks[i], marks[i + 1]
            if start is not None and end is not None:
                out[i].append(float(end) - float(start))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--purchases", type=int, default=200)
    ap.add_argument("--at-once", type=int, default=20)
    ap.add_argument("--voucher-rounds", type=int, default=3)
    ap.add_argument("--logs", type=Path, help="copy the processes' logs to this folder")
    a = ap.parse_args()
    with PayLab.running(clients=a.at_once) as pl:
        phones = pl.lab.clients
        out = subprocess.run(
            [str(BIN / "hub-agent"), "vouchers", "issue", "--config", str(pl.config_path),
             "--plan", "heure", "--count", str(a.voucher_rounds * len(phones)), "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        codes = list(json.loads(out.stdout)["codes"])
        login: list[float | None] = []
        bought: list[Bought] = []
        started = time.monotonic()
        with ThreadPoolExecutor(len(phones)) as pool:
            for r in range(a.voucher_rounds):
                batch = codes[r * len(phones) : (r + 1) * len(phones)]
                login += pool.map(
                    lambda cc: login_to_packet(cc[0], {"method": "voucher", "code": cc[1]}),
                    zip(phones, batch, strict=True),
                )
            n = 0
            while n < a.purchases:
                k = min(len(phones), a.purchases - n)
                ids = [(phones[i], n + i) for i in range(k)]
                bought += pool.map(lambda cn: purchase(pl, *cn), ids)
                n += k
        took = time.monotonic() - started
        rows = pl.centre_rows()
        delivered = wait_for(
            "every purchase delivered",
            lambda: (d := sum(r["state"] == "delivered" for r in pl.centre_rows())) >= len(rows)
            and d,
            30,
        ) if rows else 0  # fmt: skip
        grants = pl.hub_query("SELECT request_id, count(*) FROM purchase_grants GROUP BY 1")
        prompts = [p.pushed for p in pl.sim.payments.values()]
        sessions = pl.hub_query("SELECT count(*) FROM sessions")[0][0]
        spent = stages(pl, bought)
        if a.logs:
            a.logs.mkdir(parents=True, exist_ok=True)
            for f in pl.lab.workdir.glob("*.log"):
                shutil.copy(f, a.logs / f.name)
        load = os.getloadavg()

    paid = [None if b.t1 is None else b.t1 - b.t0 for b in bought]

    ok_paid = [x for x in paid if x is not None]
    ok_login = [x for x in login if x is not None]
    print(f"paid-to-online over {len(paid)} purchases, {a.at_once} at once ({took:.0f} s)")
    if ok_paid and ok_login:
        p50, p99 = statistics.median(ok_paid), pct(ok_paid, 0.99)
        l50, l99 = statistics.median(ok_login), pct(ok_login, 0.99)
        print(f"  callback -> first packet   p50 {p50 * 1000:7.0f} ms   p99 {p99 * 1000:7.0f} ms"
              f"   (target p99 <= 2000 ms)")  # fmt: skip
        print(f"  voucher login -> packet    p50 {l50 * 1000:7.0f} ms   p99 {l99 * 1000:7.0f} ms"
              f"   ({len(ok_login)} logins, same run)")  # fmt: skip
        print(f"  ratio paid/voucher         p50 {p50 / l50:7.1f}      p99 {p99 / l99:7.1f}")
    for name, xs in zip(STAGES, spent, strict=True):
        if xs:
            print(f"    {name:34} p50 {statistics.median(xs) * 1000:7.0f} ms"
                  f"   p99 {pct(xs, 0.99) * 1000:7.0f} ms")  # fmt: skip
    print(f"  load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"({os.cpu_count()} CPUs)")  # fmt: skip
    print(f"  never online: {len(paid) - len(ok_paid)} purchases, "
          f"{len(login) - len(ok_login)} voucher logins")  # fmt: skip
    print(f"  centre: {len(rows)} purchases, {delivered} delivered; lost "
          f"{a.purchases - delivered}")  # fmt: skip
    print(
        f"  hub: {len(grants)} grants applied, doubled {sum(c > 1 for _, c in grants)};"
        f" provider prompts per payment max {max(prompts, default=0)};"
        f" sessions {sessions} (= {a.purchases} purchases + {len(login)} vouchers)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
