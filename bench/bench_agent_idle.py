"""The whole hub agent idle: CPU and RSS over 60 s, beside a bare paho client (baseline).

`hub-agent run` (root) in a lab hub namespace with the real broker upstream, one phone
logged in and quiet: the accounting pass every 2 s (reads the nft table), discovery every
10 s (neighbours, leases, the scapy sniffer), telemetry at the default 60 s, the content
service, its dnsmasq and nginx children. The baseline is a bare paho client connected to
the same broker, idle, in the same run.

Run as root: .venv/bin/python bench/bench_agent_idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.broker import Broker  # noqa: E402
from lab.netns import HUB_LAN, UPSTREAM, Lab  # noqa: E402

BIN = Path(sys.executable).parent
BARE = (
    "import paho.mqtt.client as m, sys, time\n"
    "from paho.mqtt.enums import CallbackAPIVersion as V\n"
    "c = m.Client(V.VERSION2, client_id='idle-bare')\n"
    "c.connect(sys.argv[1], 1883)\n"
    "c.loop_start(); time.sleep(3600)\n"
)


def config(rundir: Path, broker: Broker) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "hub.yaml").read_text())
    data["data_dir"] = str(rundir / "data")
    data["portal"]["agent_socket"] = str(rundir / "agent.sock")
    data["staff"]["devices"] = []
    data["mqtt"]["url"] = broker.url
    data["network"]["wan"]["dns_servers"] = [UPSTREAM]
    data["network"]["wan"]["probe_host"] = UPSTREAM
    return data


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    rundir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    with Lab.create(clients=1, nat=False) as lab:
        broker = Broker(host=UPSTREAM, netns=lab.upstream_ns)
        broker.start()
        try:
            conf = rundir / "hub.yaml"
            conf.write_text(yaml.safe_dump(config(rundir, broker), allow_unicode=True))
            agent = lab.spawn(
                lab.hub_ns, str(BIN / "hub-agent"), "run", "--config", str(conf), log="agent.log"
            )
            bare = lab.spawn(lab.hub_ns, sys.executable, "-c", BARE, UPSTREAM, log="bare.log")
            deadline = time.monotonic() + 30
            while not (rundir / "agent.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            lab.wait_port(lab.hub_ns, HUB_LAN, 53, udp=True, timeout=20)
            time.sleep(10)  # start-up (imports, reconcile, first sample) is not idle
            # `ip netns exec` execs the program: the Popen pid is the agent itself
            a = psutil.Process(agent.pid)
            family = [a, *a.children(recursive=True)]
            b = psutil.Process(bare.pid)
            a0, f0, b0 = cpu_s([a]), cpu_s(family), cpu_s([b])
            time.sleep(args.seconds)
            a1, f1, b1 = cpu_s([a]), cpu_s(family), cpu_s([b])
            pct = {k: (v1 - v0) / args.seconds * 100 for k, v0, v1 in
                   (("agent", a0, a1), ("family", f0, f1), ("bare", b0, b1))}  # fmt: skip
            rss = a.memory_info().rss / 1e6
            rss_family = sum(p.memory_info().rss for p in family if p.is_running()) / 1e6
            rss_bare = b.memory_info().rss / 1e6
            names = sorted({p.name() for p in family[1:] if p.is_running()})
            tick = 100 / 100 / args.seconds  # one 10 ms clock tick over the run, in %
            print(f"idle over {args.seconds:.0f} s (accounting 2 s, discovery 10 s, health 60 s)")
            print(f"  hub-agent           CPU {pct['agent']:6.3f}%  RSS {rss:6.1f} MB")
            print(f"  + children {names}: CPU {pct['family']:6.3f}%  RSS {rss_family:6.1f} MB")
            print(f"  bare paho client    CPU {pct['bare']:6.3f}%  RSS {rss_bare:6.1f} MB")
            print(f"  ratio agent / bare: CPU {pct['agent'] / max(pct['bare'], tick):.1f}x"
                  f" (floor one tick), RSS {rss / rss_bare:.1f}x")  # fmt: skip
            agent.terminate()
            agent.wait(15)
            bare.terminate()
        finally:
            broker.stop()
            lab.hub_exec("nft", "delete", "table", "inet", "relais")


if __name__ == "__main__":
    main()
