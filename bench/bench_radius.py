"""Account login through RADIUS -> first packet through the hub, against a voucher login in
the same run.

The real lab (tests/linux/test_accounts_lab.py's ``account_hub``): `hub-agent run` and
`captive-portal` in the hub namespace, FreeRADIUS in the upstream namespace, phones on the
LAN. Each login: the phone fetches the splash (its CSRF token), a prober in its namespace
starts, t0, the phone POSTs the login form, latency = the prober's first upstream answer -
t0 (lab/firstpacket.py, as bench_paid_to_online.py); then the phone logs out. Account
(alice's, PAP against FreeRADIUS' users file) and voucher logins alternate on the same
phones so both see the same machine state.

Prints p50/p99 of both and the p99 ratio account/voucher (target <= 1.5).

Run as root: .venv/bin/python bench/bench_radius.py [--logins 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.firstpacket import login_to_packet, pct
from lab.paylab import BIN
from tests.linux.test_accounts_lab import account_hub


def issue(config_path: Path, count: int) -> list[str]:
    out = subprocess.run(
        [str(BIN / "hub-agent"), "vouchers", "issue", "--config", str(config_path),
         "--plan", "heure", "--count", str(count), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return list(json.loads(out.stdout)["codes"])


def line(name: str, xs: list[float]) -> str:
    return (
        f"  {name:<28} p50 {statistics.median(xs) * 1000:6.0f} ms   "
        f"p99 {pct(xs, 0.99) * 1000:6.0f} ms   ({len(xs)} logins)"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logins", type=int, default=100)
    n = ap.parse_args().logins
    load0 = os.getloadavg()[0]  # latencies on the shared box move with it
    account: list[float | None] = []
    voucher: list[float | None] = []
    with account_hub() as (hub, _):
        phone = hub.lab.clients[0]
        codes = issue(hub.config_path, n)
        for code in codes:
            account.append(
                login_to_packet(
                    phone, {"method": "account", "username": "alice", "password": "alice-pass"}
                )
            )
            voucher.append(login_to_packet(phone, {"method": "voucher", "code": code}))
    ok_acc = [x for x in account if x is not None]
    ok_vou = [x for x in voucher if x is not None]
    print(f"login -> first packet through the hub, {n} account + {n} voucher logins, alternating")
    print(f"  load average (1 min): {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(f"  never online: {n - len(ok_acc)} account, {n - len(ok_vou)} voucher logins")
    if not ok_acc or not ok_vou:
        return 1
    print(line("account (RADIUS) login", ok_acc))
    print(line("voucher login", ok_vou))
    ratio = pct(ok_acc, 0.99) / pct(ok_vou, 0.99)
    p50 = statistics.median(ok_acc) / statistics.median(ok_vou)
    met = ratio <= 1.5
    print(f"  ratio account/voucher       p50 {p50:6.2f}      p99 {ratio:6.2f}"
          f"   (target p99 <= 1.5): {'OK' if met else 'MISSED'}")  # fmt: skip
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
