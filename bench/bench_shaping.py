"""Shaping bench (issue 21): N devices (3, 10, 30) on one plan behind a WAN bottleneck,
each downloading at once; per trial the Jain index and the slowest device's share of its
fair share, beside the kernel's own per-class byte counters; then the minimum over trials.

Baseline, in the same run and the same lab: the previous shaping (every device class at a
16 kbit/s guarantee borrowing everything, 1,000-packet pfifo leaves), set on the same tree
with tc. Targets: minimum Jain >= 0.95 and minimum share >= 0.8 of fair.

Run (root): .venv/bin/python bench/bench_shaping.py [--trials 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_agent.enforce import tc_plan  # noqa: E402
from hub_agent.enforce.enforcer import Enforcer  # noqa: E402
from hub_agent.enforce.model import DesiredState  # noqa: E402
from lab.netns import UPSTREAM, Client, Lab  # noqa: E402
from tests.linux.test_enforce_helpers import grant, lab_config  # noqa: E402

WAN_DOWN, WAN_UP = 3000, 2000
PLAN_DOWN, PLAN_UP = 2000, 1000
BASE_PORT = 5301


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if any(xs) else 0.0


def iperf(c: Client, port: int, seconds: int) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", c.ns, "iperf3", "-c", UPSTREAM, "-p", str(port), "-R",
           "-t", str(seconds), "-O", "1", "-J"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kbit(p: subprocess.Popen[str], seconds: int) -> float:
    out, _ = p.communicate(timeout=seconds + 30)
    try:
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1000
    except (KeyError, ValueError):
        return 0.0


def class_bytes(lab: Lab, slots: list[int]) -> list[int]:
    out = lab.hub_exec("tc", "-s", "-j", "class", "show", "dev", "lan0").stdout
    by_id = {c["handle"]: c.get("stats", {}).get("bytes", 0) for c in json.loads(out)}
    return [int(by_id.get(f"1:{s:x}", 0)) for s in slots]


def legacy(lab: Lab, enf: Enforcer) -> None:
    """The shaping before issue 21, on the same tree: tiny guarantees, deep leaves."""
    for slot in enf._slots.values():
        cid = f"1:{slot:x}"
        ceil = f"{PLAN_DOWN}kbit"
        lab.hub_exec("tc", "class", "change", "dev", "lan0", "parent", "1:20", "classid", cid,
                     "htb", "rate", "16kbit", "ceil", ceil, "quantum", "3028")  # fmt: skip
        lab.hub_exec("tc", "qdisc", "replace", "dev", "lan0", "parent", cid,
                     "handle", f"{slot:x}:", "pfifo", "limit", "1000")  # fmt: skip


def passes(enf: Enforcer, stop: threading.Event) -> None:
    while not stop.wait(2.0):  # the agent's accounting pass
        enf.counters()
        enf.rebalance()


def run(lab: Lab, n: int, trials: int, seconds: int, old: bool) -> tuple[float, float]:
    devices = lab.clients[:n]
    cfg = lab_config(lab, network=_net(lab), staff={"guaranteed_share_pct": 40, "devices": []})
    enf = Enforcer(cfg, netns=lab.hub_ns)
    stop = threading.Event()
    worker = threading.Thread(target=passes, args=(enf, stop), daemon=True)
    try:
        enf.reconcile(DesiredState(grants=tuple(grant(c, PLAN_DOWN, PLAN_UP) for c in devices)))
        if old:
            legacy(lab, enf)
        else:
            worker.start()
        slots = [enf._slots[c.mac] for c in devices]
        fair = min(PLAN_DOWN, tc_plan.community_kbit(cfg, True, staff_busy=False) / n)
        worst_j, worst_share = 1.0, 10.0
        for t in range(trials):
            before = class_bytes(lab, slots)
            procs = [iperf(c, BASE_PORT + i, seconds) for i, c in enumerate(devices)]
            rates = [kbit(p, seconds) for p in procs]
            after = class_bytes(lab, slots)
            j, share = jain(rates), min(rates) / fair
            worst_j, worst_share = min(worst_j, j), min(worst_share, share)
            kern = [round((a - b) / 1000) for a, b in zip(after, before, strict=True)]
            print(f"  {'old' if old else 'new'} n={n} trial {t}: Jain {j:.3f}, min share "
                  f"{share:.2f} of fair ({fair:.0f} kbit/s), kbit/s {[round(r) for r in rates]}, "
                  f"kernel class kB {kern if n <= 10 else '...'}")  # fmt: skip
        return worst_j, worst_share
    finally:
        stop.set()
        enf.close()
        lab.hub_exec("nft", "delete", "table", "inet", "relais")


def _net(lab: Lab) -> dict[str, object]:
    net = lab_config(lab).network.model_dump(mode="json")
    net["wan"].update(down_kbit=WAN_DOWN, up_kbit=WAN_UP)
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--sizes", default="3,10,30")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    with Lab.create(clients=max(sizes), nat=False, http=False, dns=False) as lab:
        for i in range(max(sizes)):
            lab.spawn(lab.upstream_ns, "iperf3", "-s", "-p", str(BASE_PORT + i), log=f"i{i}.log")
        for i in range(max(sizes)):
            lab.wait_port(lab.upstream_ns, UPSTREAM, BASE_PORT + i)
        rows = []
        for n in sizes:
            new = run(lab, n, args.trials, args.seconds, old=False)
            old = run(lab, n, args.trials, args.seconds, old=True)
            rows.append((n, new, old))
        print(f"\n{'devices':>8} {'min Jain new':>13} {'old':>6} {'min share new':>14} {'old':>6}")
        for n, (jn, sn), (jo, so) in rows:
            print(f"{n:>8} {jn:>13.3f} {jo:>6.3f} {sn:>14.2f} {so:>6.2f}")
        ok = all(jn >= 0.95 and sn >= 0.8 for _, (jn, sn), _ in rows)
        print(f"targets (min Jain >= 0.95, min share >= 0.8 of fair): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
