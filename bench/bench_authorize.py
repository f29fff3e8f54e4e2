"""Authorise 1,000 devices one by one in a throwaway lab; is a login O(1)?

Prints the time for the last 100 logins against the first 100 (the baseline, measured in the
same run; target ratio <= 1.5) and the login -> first-packet-through latency (target p99 <=
50 ms), sampled every 25 logins and 20 more times with all 1,000 devices present: a client
sends a UDP datagram every millisecond; a receiver upstream notes when packets start
arriving again after a silence; latency = that moment - the start of authorize().

Run as root: .venv/bin/python bench/bench_authorize.py [--devices N]
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub_agent.config import load_config, validate_config
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState, Grant
from lab.netns import UPSTREAM, Lab

ROOT = Path(__file__).resolve().parents[1]

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    try:
        s.sendto(b"x", (sys.argv[1], 9999))
    except OSError:
        pass
    time.sleep(0.001)
"""

# prints the monotonic time of the first datagram after >= 30 ms of silence
RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
last = 0.0
while True:
    s.recv(64)
    now = time.monotonic()
    if now - last > 0.03:
        print(f"{now:.6f}", flush=True)
    last = now
"""


def fake_grant(i: int) -> Grant:
    return Grant(
        mac=f"02:be:00:00:{i // 256:02x}:{i % 256:02x}",
        ip=f"10.42.{4 + i // 250}.{1 + i % 250}",
        down_kbit=2000,
        up_kbit=1000,
        quota_bytes=300_000_000,
        timeout_s=3600,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    args = ap.parse_args()
    n = args.devices
    with Lab.create(clients=1, nat=False, http=False, dns=False) as lab:
        data = load_config(ROOT / "examples" / "hub.yaml", env={}).to_wire()
        data["data_dir"] = str(lab.workdir / "data")
        data["network"]["lan"]["address"] = "10.42.0.1/16"  # room for 1,000 fake devices
        data["network"]["lan"]["dhcp_start"] = "10.42.0.100"
        data["network"]["lan"]["dhcp_end"] = "10.42.0.250"
        config = validate_config(data)
        c1 = lab.clients[0]
        real = Grant(c1.mac, c1.ip, 50_000, 50_000, ip6=(c1.ip6,), timeout_s=3600)
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", lab.upstream_ns, sys.executable, "-u", "-c", RECEIVER],
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        sender = subprocess.Popen(
            ["ip", "netns", "exec", c1.ns, sys.executable, "-c", SENDER, UPSTREAM],
        )
        assert receiver.stdout is not None
        fd = receiver.stdout.fileno()
        enf = Enforcer(config, netns=lab.hub_ns)
        try:
            enf.reconcile(DesiredState())

            def latency() -> float:
                enf.deauthorize(real.mac)
                time.sleep(0.06)  # silence upstream
                # forget gaps reported before (CPU stalls of the sender while we worked)
                while select.select([fd], [], [], 0)[0]:
                    os.read(fd, 65536)
                t0 = time.monotonic()
                enf.authorize(real)
                return next_line() - t0

            buf = bytearray()

            def next_line() -> float:
                while b"\n" not in buf:
                    buf.extend(os.read(fd, 65536))
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                return float(line)

            # packets flow once the real client is in; its first report is not a sample
            enf.authorize(real)
            next_line()

            per_login: list[float] = []
            lat: list[float] = []
            t_all = time.monotonic()
            for i in range(n):
                g = fake_grant(i)
                t0 = time.perf_counter()
                enf.authorize(g)
                per_login.append(time.perf_counter() - t0)
                if (i + 1) % 25 == 0:
                    lat.append(latency())
            total = time.monotonic() - t_all
            for _ in range(20):
                lat.append(latency())
            first, last = sum(per_login[:100]), sum(per_login[-100:])
            lat_ms = sorted(x * 1000 for x in lat)
            p99 = lat_ms[min(len(lat_ms) - 1, round(0.99 * (len(lat_ms) - 1)))]
            print(f"devices authorised one by one: {n} in {total:.1f} s (incl. latency probes)")
            print(
                f"first 100 logins: {first * 1000:.0f} ms   last 100 logins: {last * 1000:.0f} ms"
            )
            print(f"ratio last/first: {last / first:.2f}  (target <= 1.5)")
            print(
                f"login -> first packet through: p50 {statistics.median(lat_ms):.1f} ms, "
                f"p99 {p99:.1f} ms, max {lat_ms[-1]:.1f} ms over {len(lat_ms)} samples "
                "(target p99 <= 50 ms)"
            )
            print(f"kernel equals plan after the run: {enf.kernel_equals_plan()}")
        finally:
            enf.close()
            sender.kill()
            receiver.kill()


if __name__ == "__main__":
    main()
