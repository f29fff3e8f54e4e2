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
import yaml

from hub_agent.config import validate_config
from lab.broker import free_port
from lab.netns import list_netns
from provisioning.hubdoc import base_document
from provisioning.pushplan import deep_merge
from scripts.demo_config import (
    CARETAKER_PASSWORD,
    CTL_LINK,
    HUB_ID,
    broker_conf,
    content_items,
    demo_files,
    demo_layer,
    tiny_pdf,
)
from scripts.demo_procs import alive
from scripts.demo_text import render_text
from tests.conftest import require_lab, require_mosquitto

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
    port = free_port()
    env = {**os.environ, "RELAIS_DEMO_STATE": str(state), "RELAIS_DEMO_FLEET_PORT": str(port)}
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


def csrf(page: str, action: str = "") -> str:
    """The CSRF token of the page's first form, or of the form posting to ``action``."""
    at = page.find(f'action="{action}"') if action else 0
    m = re.search(r'name="csrf" value="([^"]+)"', page[max(at, 0) :])
    assert m, page[:500]
    return m.group(1)


def reaches_upstream(d: Demo) -> bool:
    r = phone(d, UPSTREAM, timeout=3)
    return r.returncode == 0 and "upstream internet" in r.stdout


def wait_online(d: Demo) -> None:
    deadline = time.monotonic() + 5
    while not reaches_upstream(d):
        assert time.monotonic() < deadline, d.log("agent")
        time.sleep(0.1)


# --- the pure parts: no privileges ---------------------------------------------------------
def test_demo_layer_on_an_enrolled_config_is_valid_and_keeps_identity(tmp_path: Path) -> None:
    enrolled = {**base_document(), "hub": {"id": HUB_ID, "kind": "mairie", "name": "M"}}
    enrolled["mqtt"] = {"url": "mqtt://198.51.100.1:1883", "username": HUB_ID, "password": "p"}
    layer = demo_layer(
        tmp_path / "hub", "scrypt$14$8$1$c2FsdA==$aGFzaA==", content_items("http://u")
    )
    cfg = validate_config(deep_merge(enrolled, layer))
    assert cfg.hub.id == HUB_ID and cfg.mqtt.username == HUB_ID  # merged, not replaced
    assert cfg.data_dir == tmp_path / "hub" / "data"
    assert cfg.portal.agent_socket == tmp_path / "hub" / "run" / "agent.sock"
    assert cfg.content.sync_window == "00:00-00:00"  # the library syncs at any hour
    assert [i.id for i in cfg.content.items] == ["guide-paludisme", "hygiene-des-mains"]
    for item, (name, (data, _)) in zip(cfg.content.items, demo_files().items(), strict=True):
        assert item.url == f"http://u/{name}" and item.size == len(data)
        assert item.sha256 == hashlib.sha256(data).hexdigest()


def test_tiny_pdf_is_a_real_pdf(tmp_path: Path) -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    path = tmp_path / "g.pdf"
    path.write_bytes(tiny_pdf(["Guide paludisme", "ligne (deux)"]))
    out = subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Guide paludisme" in out and "ligne [deux]" in out


def test_broker_config_uses_enrolls_password_file_and_acl(tmp_path: Path) -> None:
    conf = broker_conf(tmp_path)
    assert f"password_file {tmp_path / 'passwd'}" in conf.splitlines()
    assert f"acl_file {tmp_path / 'acl'}" in conf.splitlines()
    assert "allow_anonymous false" in conf.splitlines()


def test_printed_text_has_every_url_voucher_and_the_password() -> None:
    info = {
        "client_ns": "relais-1-abc-c1",
        "vouchers": {"heure": ["AAAA-BBBB-CCCC"], "jour": ["DDDD-EEEE-FFFF"]},
        "caretaker_password": CARETAKER_PASSWORD,
        "content_ready": 2,
        "fleet_url": "http://127.0.0.1:8090/",
        "hub_status": "online",
        "central_state": "/x/central",
        "push_file": "/x/demo-push.yaml",
        "push": "1 applied",
        "controller_mqtt": "mqtt://169.254.42.2:1883 (controller)",
    }
    text = render_text(info)
    for want in (
        "ip netns exec relais-1-abc-c1 curl -i http://198.51.100.1/",
        f"{PORTAL}/\n",
        f"{PORTAL}/admin   password: {CARETAKER_PASSWORD}",
        f"{PORTAL}/content/",
        "http://127.0.0.1:8090/",
        "AAAA-BBBB-CCCC",
        "DDDD-EEEE-FFFF",
        "make demo-stop",
    ):
        assert want in text + " ", want


# --- the demo for real ----------------------------------------------------------------------
@pytest.mark.root
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
    # It resolves names through the hub, and the walled garden is open by name before login.
    code, _, body = get(d, "http://service-public.gouv.tg/")
    assert code == "200" and "upstream internet" in body, (code, body[:200], d.log("agent"))
    assert get(d, "http://example.test/")[:2] == ("302", f"{PORTAL}/")  # by name, still captive

    # Login over plain HTTP with a printed voucher, then the internet.
    _, _, splash = get(d, f"{PORTAL}/")
    status, _, body = get(
        d, f"{PORTAL}/login",
        "--data-urlencode", "method=voucher", "--data-urlencode", f"code={vouchers[0]}",
        "--data-urlencode", f"csrf={csrf(splash)}",
    )  # fmt: skip
    assert status == "200" and "Vous êtes connecté" in body, body[:800] + d.log("portal")
    wait_online(d)

    # Log out: captive again. Then the login line the demo printed, typed as is.
    _, _, status_page = get(d, f"{PORTAL}/status")
    get(d, f"{PORTAL}/logout", "--data-urlencode", f"csrf={csrf(status_page, '/logout')}")
    assert not reaches_upstream(d)
    # Mobile money out of the box, with the lines printed: buy, confirm as the phone, online.
    lines = [ln.strip() for ln in d.text.splitlines()]
    (buy,) = [ln for ln in lines if "bash -c" in ln and "/pay" in ln]
    (confirm,) = [ln for ln in lines if "/_sim/confirm" in ln]
    ref = subprocess.run(["bash", "-c", buy], capture_output=True, text=True, timeout=20).stdout
    assert ref.startswith("/pay/"), ref + d.log("portal")
    deadline = time.monotonic() + 10  # until the centre has asked the (simulated) phone
    while "confirmed" not in subprocess.run(["bash", "-c", confirm], capture_output=True,
                                            text=True, timeout=20).stdout:  # fmt: skip
        assert time.monotonic() < deadline, d.log("payments") + d.log("paysim")
        time.sleep(0.2)
    deadline, receipt = time.monotonic() + 10, ""
    while "Paiement reçu" not in receipt:
        assert time.monotonic() < deadline, receipt[:800] + d.log("payments") + d.log("agent")
        receipt = get(d, f"{PORTAL}{ref.strip()}")[2]
        time.sleep(0.2)
    wait_online(d)
    _, _, status_page = get(d, f"{PORTAL}/status")
    get(d, f"{PORTAL}/logout", "--data-urlencode", f"csrf={csrf(status_page, '/logout')}")
    assert not reaches_upstream(d)
    (line,) = [ln.strip() for ln in d.text.splitlines() if " sh -c " in ln]
    typed = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=20)
    assert "Vous êtes connecté" in typed.stdout, typed.stdout + typed.stderr
    wait_online(d)

    # The library lists the demo items, synced from upstream, and serves them whole.
    code, _, library = get(d, f"{PORTAL}/content/")
    assert code == "200" and "Guide paludisme" in library and "Hygiène des mains" in library
    href = re.search(r'href="([^"]+guide-paludisme\.pdf)"', library)
    assert href, library[:1500]
    want = demo_files()["guide-paludisme.pdf"][0]
    got = subprocess.run(
        ["ip", "netns", "exec", d.phone_ns, "curl", "-sS", "--max-time", "10", href.group(1)],
        capture_output=True,
        timeout=15,
    )
    assert got.stdout == want, (got.returncode, got.stderr, href.group(1), d.log("content"))

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

    # A central push that renames the hub shows on the phone's splash page without any
    # restart: the agent applies it and the portal follows the agent's copy.
    layer = yaml.safe_load((d.state / "demo-push.yaml").read_text(encoding="utf-8"))
    layer["hub"] = {"name": "Mairie de Démo (renommée)"}
    renamed = d.state / "rename.yaml"
    renamed.write_text(yaml.safe_dump(layer, allow_unicode=True), encoding="utf-8")
    p = subprocess.run(
        [str(Path(sys.executable).parent / "hubctl"), "--state", str(d.state / "central"),
         "push", HUB_ID, str(renamed), "--timeout", "30"],
        capture_output=True, text=True, timeout=60, env=d.env,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    deadline, splash = time.monotonic() + 10, ""
    while time.monotonic() < deadline and "(renommée)" not in splash:
        _, _, splash = get(d, f"{PORTAL}/")
        time.sleep(0.5)
    assert "Mairie de Démo (renommée)" in splash, splash[:800] + d.log("portal")

    # demo-stop: nothing left.
    serve_pid = (d.state / "demo.pid").read_text().split()[0]
    procs = json.loads((d.state / "procs.json").read_text())
    assert demo_cmd("stop", d.env).returncode == 0
    assert not [ns for ns in list_netns() if ns.startswith(f"relais-{serve_pid}-")]
    assert subprocess.run(["ip", "link", "show", CTL_LINK], capture_output=True).returncode != 0
    for pid in [int(serve_pid), *(pid for pid, _ in procs["pids"].values())]:
        assert not alive(pid), pid  # a zombie waiting to be reaped is gone too
