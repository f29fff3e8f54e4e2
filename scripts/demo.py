"""`make demo` / `make demo-stop`: the product on one machine, in the lab's namespaces.

``start`` launches a detached supervisor (``serve``) that builds the lab (hub, one client,
upstream internet), starts a broker and whatever parts of Relais exist, writes what it
started to ``demo-state/demo.json`` and waits for ``stop``. Running ``start`` again while a
demo is up only prints its URLs again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "demo-state"
INFO = STATE / "demo.json"
PIDFILE = STATE / "demo.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _running_pid() -> int | None:
    try:
        pid = int(PIDFILE.read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _print(info: dict[str, Any]) -> None:
    print("Relais demo is up.")
    for key, value in info.items():
        print(f"  {key:<18} {value}")
    print("Stop it with: make demo-stop")


def start() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (it builds network namespaces).", file=sys.stderr)
        return 2
    if _running_pid() is not None and INFO.exists():
        _print(json.loads(INFO.read_text()))
        return 0
    STATE.mkdir(exist_ok=True)
    INFO.unlink(missing_ok=True)
    log = open(STATE / "demo.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.demo", "serve"], cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    PIDFILE.write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if INFO.exists():
            _print(json.loads(INFO.read_text()))
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    print((STATE / "demo.log").read_text()[-3000:], file=sys.stderr)
    print("demo failed to start", file=sys.stderr)
    return 1


def serve() -> int:
    from tests.lab.broker import Broker
    from tests.lab.netns import UPSTREAM, Lab

    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    lab = Lab.create(clients=1)
    broker = Broker(host=UPSTREAM, netns=lab.upstream_ns)
    try:
        broker.start()
        client = lab.clients[0]
        info = {
            "hub namespace": lab.hub_ns,
            "client namespace": client.ns,
            "try as a device": f"ip netns exec {client.ns} curl http://{UPSTREAM}/",
            "upstream web": f"http://{UPSTREAM}/ (from the client namespace)",
            "MQTT broker": broker.url + f" (in {lab.upstream_ns})",
            "hub config": str(ROOT / "examples" / "hub.yaml"),
            "portal": "not built yet (issue 5)",
            "caretaker": "not built yet (issue 5)",
            "fleet": "not built yet (issue 8)",
        }
        tmp = INFO.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(INFO)
        while not stopping:
            time.sleep(0.5)
    finally:
        broker.close()
        lab.close()
        INFO.unlink(missing_ok=True)
    return 0


def stop() -> int:
    pid = _running_pid()
    if pid is None:
        print("no demo running")
        return 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not _alive(pid):
            break
        time.sleep(0.1)
    PIDFILE.unlink(missing_ok=True)
    print("demo stopped")
    return 0


def main() -> int:
    verb = sys.argv[1] if len(sys.argv) > 1 else "start"
    return {"start": start, "serve": serve, "stop": stop}[verb]()


if __name__ == "__main__":
    raise SystemExit(main())
