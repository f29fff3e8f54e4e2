"""`make demo` for real, driven only by what it prints, as a person would.

The demo runs from its own state folder (``RELAIS_DEMO_STATE``) so a person's demo-state/
is left alone. A scripted phone in the printed namespace is redirected to the portal, logs
in with a printed voucher, reaches upstream and opens the synced library; the caretaker
logs in with the printed password; the controller shows the hub online with the demo's
pushed config applied; ``demo-stop`` leaves no namespace, link or process behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.demo import CTL_LINK, HUB_ID, alive, demo_files
from tests.conftest import require_lab, require_mosquitto
from tests.lab.netns import list_netns

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
PORTAL = "http://10.42.0.1:8080"
UPSTREAM = "http://198.51.100.1/"


@dataclass
class Demo:
    state: Path
    text: str
    env: dict[str, str]

    def field(self, label: str) -> str:
        m = re.search(rf"^  {re.escape(label)}\s+(.+)$", self.text, re.M)
        assert m, f"{label!r} not printed:\n{self.text}"
        return m.group(1)

    @property
    def phone_ns(self) -> str:
        m = re.search(r"ip netns exec (relais-\S+) curl", self.text)
        assert m, self.text
        return m.group(1)

    def log(self, name: str) -> str:
        p = self.state / f"{name}.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""


def demo_cmd(verb: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.demo", verb],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def demo() -> Iterator[Demo]:
    require_lab()
    require_mosquitto()
    if subprocess.run(["ip", "link", "show", CTL_LINK], capture_output=True).returncode == 0:
        pytest.skip(f"a demo is already running on this machine ({CTL_LINK} exists)")
    state = Path(tempfile.mkdtemp(prefix="relais-demo-"))
    env = {**os.environ, "RELAIS_DEMO_STATE": str(state)}
    try:
        p = demo_cmd("start", env)
        assert p.returncode == 0, p.stderr[-4000:]
        yield Demo(state, p.stdout, env)
    finally:
        demo_cmd("stop", env)
        shutil.rmtree(state, ignore_errors=True)


def phone(d: Demo, *args: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", d.phone_ns, "curl", "-sS", "--max-time", str(timeout), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5)


def get(d: Demo, url: str, *args: str) -> tuple[str, str, str]:
    """(status, redirect location, body) of one request from the phone."""
    r = phone(d, url, "-o", "-", "-w", "\n%{http_code} %{redirect_url}", *args)
    body, _, tail = r.stdout.rpartition("\n")
    code, _, location = tail.partition(" ")
    return code, location, body


def csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    return m.group(1)


def reaches_upstream(d: Demo) -> bool:
    r = phone(d, UPSTREAM, timeout=3)
    return r.returncode == 0 and "upstream internet" in r.stdout


def test_demo_phone_caretaker_fleet_and_teardown(demo: Demo) -> None:
    d = demo
    # Printed once more, the same text: a second `make demo` changes nothing.
    again = demo_cmd("start", d.env)
    assert again.returncode == 0 and again.stdout == d.text

    assert d.field("Portal (phone)") == f"{PORTAL}/"
    vouchers = re.findall(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", d.field("Vouchers, 1-hour"))
    assert len(vouchers) == 3, d.text
    password = d.field("Caretaker (phone)").split("password:")[1].strip()
    fleet_url = d.field("Fleet page").split()[0]

    # The phone is captive: any web request lands on the splash page.
    code, location, _ = get(d, UPSTREAM)
    assert (code, location) == ("302", f"{PORTAL}/"), d.log("agent")
    assert not reaches_upstream(d)

    # Login over plain HTTP with a printed voucher, then the internet.
    _, _, splash = get(d, f"{PORTAL}/")
    status, _, body = get(
        d, f"{PORTAL}/login",
        "--data-urlencode", "method=voucher", "--data-urlencode", f"code={vouchers[0]}",
        "--data-urlencode", f"csrf={csrf(splash)}",
    )  # fmt: skip
    assert status == "200" and "Vous êtes connecté" in body, body[:800] + d.log("portal")
    deadline = time.monotonic() + 5
    while not reaches_upstream(d):
        assert time.monotonic() < deadline, d.log("agent")
        time.sleep(0.1)

    # The library lists the demo items, synced from upstream, and serves them whole.
    code, _, library = get(d, f"{PORTAL}/content/")
    assert code == "200" and "Guide paludisme" in library and "Hygiène des mains" in library
    href = re.search(r'href="([^"]+guide-paludisme\.pdf)"', library)
    assert href, library[:1500]
    want = demo_files()["guide-paludisme.pdf"][0]
    pdf_bytes = subprocess.run(
        ["ip", "netns", "exec", d.phone_ns, "curl", "-sS", "--max-time", "10", href.group(1)],
        capture_output=True,
        timeout=15,
    ).stdout
    assert hashlib.sha256(pdf_bytes).hexdigest() == hashlib.sha256(want).hexdigest()

    # The caretaker logs in with the printed password and sees the dashboard.
    jar = d.state / "caretaker.cookies"
    code, _, form = get(d, f"{PORTAL}/admin", "-c", str(jar))
    assert code == "401", form[:500]
    code, _, dash = get(
        d, f"{PORTAL}/admin/login", "-L", "-b", str(jar), "-c", str(jar),
        "--data-urlencode", f"password={password}", "--data-urlencode", f"csrf={csrf(form)}",
    )  # fmt: skip
    # the dashboard, with the phone's live session (its disconnect button) read from the agent
    assert code == "200" and 'action="/admin/logout"' in dash, dash[:500] + d.log("portal")
    assert 'action="/admin/disconnect"' in dash, dash[:3000]

    # The controller: hub online, the demo's pushed config applied (v2 over the signed path).
    p = subprocess.run(
        [str(Path(sys.executable).parent / "hubctl"), "--state", str(d.state / "central"),
         "fleet", "--json"],
        capture_output=True, text=True, timeout=30, env=d.env,
    )  # fmt: skip
    (row,) = [r for r in json.loads(p.stdout) if r["id"] == HUB_ID]
    assert row["status"] == "online", row
    assert (row["reported_version"], row["config_status"]) == (2, "applied"), row
    with urllib.request.urlopen(fleet_url, timeout=5) as r:
        assert HUB_ID in r.read().decode()

    # demo-stop: nothing left.
    serve_pid = (d.state / "demo.pid").read_text().split()[0]
    procs = json.loads((d.state / "procs.json").read_text())
    assert demo_cmd("stop", d.env).returncode == 0
    assert not [ns for ns in list_netns() if ns.startswith(f"relais-{serve_pid}-")]
    assert subprocess.run(["ip", "link", "show", CTL_LINK], capture_output=True).returncode != 0
    for pid in [int(serve_pid), *(pid for pid, _ in procs["pids"].values())]:
        assert not alive(pid), pid  # a zombie waiting to be reaped is gone too
