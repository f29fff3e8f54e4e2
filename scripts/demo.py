"""`make demo` / `make demo-stop`: the whole product on one machine, in lab namespaces.

``start`` launches a detached supervisor (``serve``) and prints what it started; running
``start`` again while a demo is up prints the same text again. ``serve``:

1. builds the lab (hub, one phone, upstream "internet" with HTTP and DNS; no lab NAT: the
   agent's own nftables table does it) and a veth from this machine to the upstream
   namespace, so the controller here reaches the broker there;
2. enrolls the demo hub with the real ``hubctl enroll`` (broker password file + ACL,
   central signing key, first config, host_vars) under ``<state>/central``;
3. runs mosquitto in the upstream namespace with that password file and ACL;
4. adds two demo items to the central content catalogue (``hubctl content add|assign``)
   and writes the hub's config from the enrolled one (demo caretaker password, the hub's
   manifest from the catalogue, paths under ``<state>/hub``), issues demo vouchers with
   ``hub-agent vouchers issue``, then runs ``hub-agent run`` (root: enforcement,
   accounting, telemetry, config sync and the content cache, which syncs the items from
   upstream and serves them with nginx on :8081) and ``captive-portal`` (nobody) in the
   hub namespace;
5. runs ``hubctl controller run`` on this machine (fleet page on 127.0.0.1:8090), and
   mobile money against the provider simulator: ``hubctl payments simulator`` (the phone's
   confirmation page on 127.0.0.1:8092) and ``hubctl payments run`` (callbacks on :8091)
   with ``secrets/payments.json`` pointing both providers at the simulator;
6. waits until the phone sees the portal, the library is synced and the fleet shows the
   hub online; pushes the demo's layer with ``hubctl push`` (signed, over MQTT: the
   registry's desired config is then the one running, v2 applied), writes
   ``<state>/demo.json`` and waits for ``stop``.

Every process logs to ``<state>/<name>.log``. ``stop`` ends the supervisor, which stops
its processes and deletes the namespaces; it then removes anything a killed supervisor
left behind (the pids and namespaces it recorded in ``<state>/procs.json``).
``RELAIS_DEMO_STATE`` moves the state folder (default ``demo-state/``) and
``RELAIS_DEMO_FLEET_PORT`` the fleet page (default 8090); the tests use both.

This module starts and stops the supervisor; its parts: demo_config.py (settings and the
documents it seeds), demo_up.py (bringing it up), demo_procs.py (the processes it
supervises), demo_text.py (what it prints).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from lab.netns import LabError, delete_netns, list_netns
from scripts.demo_config import CTL_LINK, INFO, PIDFILE, PROCS, ROOT, START_TIMEOUT_S, STATE, shown
from scripts.demo_procs import DemoError, Supervisor, alive, same_process, started
from scripts.demo_text import render_text
from scripts.demo_up import bring_up


def _running_pid() -> int | None:
    try:
        pid_text, _, start = PIDFILE.read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if same_process(pid, start.strip() or None) else None


def serve() -> int:
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sup = Supervisor()
    try:
        lab, info = bring_up(sup)
    except (DemoError, LabError) as e:  # a clear reason, not a traceback
        print(f"demo failed: {e}", flush=True)
        return 1
    try:
        info["text"] = render_text(info)
        tmp = INFO.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(INFO)
        print("demo up", flush=True)
        reported: set[str] = set()
        while not stopping:
            for name, p in sup.procs.items():  # say so once if a part dies; keep the rest up
                if p.poll() is not None and name not in reported:
                    reported.add(name)
                    print(f"{name} exited ({p.returncode}); see {name}.log", flush=True)
            time.sleep(0.5)
    finally:
        sup.stop_all()
        lab.close()
        INFO.unlink(missing_ok=True)
        PROCS.unlink(missing_ok=True)
        print("demo down", flush=True)
    return 0


def leftovers() -> bool:
    """Remove what a killed supervisor left: its recorded processes, namespaces and link.
    True when there was a record to clean up."""
    try:
        data = json.loads(PROCS.read_text())
    except (OSError, ValueError):
        return False
    for pid, start in data.get("pids", {}).values():
        if same_process(int(pid), start):  # each was started as its own process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
    present = set(list_netns())
    for ns in data.get("namespaces", []):
        if ns in present:
            delete_netns(ns)
    subprocess.run(["ip", "link", "del", str(data.get("link", CTL_LINK))], capture_output=True)
    PROCS.unlink(missing_ok=True)
    return True


def start() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (it builds network namespaces).", file=sys.stderr)
        return 2
    if _running_pid() is not None and INFO.exists():
        print(json.loads(INFO.read_text())["text"])
        return 0
    if _running_pid() is not None:
        print("a demo is starting or stopping; try again, or: make demo-stop", file=sys.stderr)
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    leftovers()
    INFO.unlink(missing_ok=True)
    with open(STATE / "demo.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.demo", "serve"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PIDFILE.write_text(f"{proc.pid} {started(proc.pid)}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if INFO.exists():
            print(json.loads(INFO.read_text())["text"])
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    else:
        stop()
    print((STATE / "demo.log").read_text(errors="replace")[-3000:], file=sys.stderr)
    print(f"demo failed to start; logs in {shown(STATE)}/*.log", file=sys.stderr)
    return 1


def stop() -> int:
    pid = _running_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    cleaned = leftovers()
    # The kernel destroys a deleted namespace asynchronously; until then our end of the
    # controller link lingers. Delete it ourselves and wait until it is gone.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        subprocess.run(["ip", "link", "del", CTL_LINK], capture_output=True)
        if subprocess.run(["ip", "link", "show", CTL_LINK], capture_output=True).returncode:
            break
        time.sleep(0.1)
    PIDFILE.unlink(missing_ok=True)
    INFO.unlink(missing_ok=True)
    print("demo stopped" if pid is not None or cleaned else "no demo running")
    return 0


def main() -> int:
    verb = sys.argv[1] if len(sys.argv) > 1 else "start"
    verbs: dict[str, Callable[[], int]] = {"start": start, "serve": serve, "stop": stop}
    if verb not in verbs:
        print(f"usage: python -m scripts.demo {{{','.join(verbs)}}}", file=sys.stderr)
        return 2
    return verbs[verb]()


if __name__ == "__main__":
    raise SystemExit(main())
