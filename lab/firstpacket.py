"""Login -> first packet through the hub, measured from a phone's namespace (benches).

A prober in the phone's namespace opens a TCP connection to upstream :443 every 10 ms: the
hub resets it while the device is captive (so the portal is not loaded by it), upstream
answers once the device is authorised; the first answer's wall-clock time is the first
packet through. Used by bench/bench_paid_to_online.py and bench/bench_radius.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

from lab.netns import HUB_LAN, UPSTREAM, Client

PORTAL = f"http://{HUB_LAN}:8080"

PROBE = """
import socket, sys, time
print("ready", flush=True)
deadline = time.time() + 30
while time.time() < deadline:
    try:  # captive: TCP to 443 is reset by the hub; authorised: upstream answers
        socket.create_connection((sys.argv[1], 443), timeout=1).close()
        print(time.time(), flush=True)
        sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
print("timeout", flush=True)
"""


def portal_get(c: Client, url: str, *args: str, timeout: float = 5) -> tuple[str, str, str]:
    """(HTTP status, redirect location, body) of one curl from the phone."""
    r = c.curl(url, "-o", "-", "-w", "\n%{http_code} %{redirect_url}", *args, timeout=timeout)
    body, _, tail = r.stdout.rpartition("\n")
    code, _, location = tail.partition(" ")
    return code, location, body


def start_probe(c: Client) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", c.ns, sys.executable, "-c", PROBE, UPSTREAM],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def first_packet(p: subprocess.Popen[str]) -> float | None:
    """The prober's first upstream answer (time.time()), None if none within 30 s."""
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    p.kill()  # its answer is in: on a loaded box its exit alone took over 5 s
    p.wait()
    return float(line) if line and line != "timeout" else None


def logout(c: Client) -> None:
    """Log the phone out through its status page's form (nothing if it has none)."""
    _, _, page = portal_get(c, PORTAL + "/status")
    at = page.find('action="/logout"')
    m = re.search(r'name="csrf" value="([^"]+)"', page[at:]) if at >= 0 else None
    if m:
        portal_get(c, PORTAL + "/logout", "--data-urlencode", f"csrf={m.group(1)}")


def login_to_packet(c: Client, fields: dict[str, str]) -> float | None:
    """POST the splash's login form with ``fields`` (method=..., code= or username= and
    password=): seconds from just before the POST to the first packet through, None if
    none came; the phone is logged out afterwards."""
    _, _, page = portal_get(c, PORTAL + "/")
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    form = [a for k, v in fields.items() for a in ("--data-urlencode", f"{k}={v}")]
    probe = start_probe(c)
    t0 = time.time()
    portal_get(c, PORTAL + "/login", *form, "--data-urlencode", f"csrf={m.group(1)}")
    t1 = first_packet(probe)
    logout(c)
    return None if t1 is None else t1 - t0


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]
