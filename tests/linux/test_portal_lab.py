"""The portal for real in the lab: `captive-portal` runs unprivileged (nobody) in the hub
namespace, phones in client namespaces reach it through a port-80 redirect, and a real
headless Chromium logs in with a voucher. Behind the portal's socket is the real agent's
handler and sessions (tests/unit/real_agent.py) with a recording kernel, so the lab's own
nft redirect stands in for the enforcement; the end-to-end test with `hub-agent run` is the
integrator's.
Screenshots land in test-artifacts/portal/ (360x640, a small phone)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hub_agent.config import validate_config
from hub_agent.sessions.vouchers import format_code, new_local_code
from lab.netns import HUB_LAN, Client, Lab
from lab.users import NOBODY, portal_setpriv
from tests.unit.real_agent import ADMIN_HASH, ADMIN_PASSWORD, AgentThread, FakeClock, RealAgent
from tests.unit.real_agent import config_dict as make_config

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "portal"
PORTAL = f"http://{HUB_LAN}:8080"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class PortalLab:
    lab: Lab
    agent: RealAgent
    proc: subprocess.Popen[bytes]
    rundir: Path
    heure: str  # a 1-hour ticket the agent issued


@pytest.fixture
def portal_lab(lab: Lab) -> Iterator[PortalLab]:
    # A directory the unprivileged portal can read; the socket is group nogroup, 0660.
    rundir = Path(tempfile.mkdtemp(prefix="relais-portal-"))
    os.chmod(rundir, 0o755)
    sock = rundir / "agent.sock"
    data = make_config(sock, admin_password_hash=ADMIN_HASH)
    cfg = rundir / "hub.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    agent = RealAgent(validate_config(data), {c.ip: c.mac for c in lab.clients}, FakeClock())
    heure = agent.issue("heure")
    # What the enforcement does for unauthorised devices: port 80, any host, to the portal.
    lab.nft(
        lab.hub_ns,
        "table ip portal_lab {\n chain pre { type nat hook prerouting priority dstnat;\n"
        '  iifname "lan0" tcp dport 80 redirect to :8080\n }\n}\n',
    )
    with agent, AgentThread(sock, agent, group="nogroup"):
        bin_ = Path(sys.executable).parent / "captive-portal"
        proc = lab.spawn(
            lab.hub_ns,
            *portal_setpriv(gid=NOBODY),  # nogroup: the socket's group here
            str(bin_),
            "--config",
            str(cfg),
            log="portal.log",
        )
        lab.wait_port(lab.hub_ns, HUB_LAN, 8080, timeout=20)
        try:
            yield PortalLab(lab, agent, proc, rundir, heure)
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(rundir, ignore_errors=True)


def _curl(c: Client, url: str, *args: str) -> tuple[str, str, str]:
    """(status, Location, body) as the device sees them."""
    r = c.curl(url, "-o", "-", "-w", "\n%{http_code} %{redirect_url}", *args)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("\n")
    code, _, location = tail.partition(" ")
    return code, location, body


def test_portal_runs_unprivileged_and_answers_probes_through_the_redirect(
    portal_lab: PortalLab,
) -> None:
    uid_line = next(
        line
        for line in Path(f"/proc/{portal_lab.proc.pid}/status").read_text().splitlines()
        if line.startswith("Uid:")
    )
    assert uid_line.split()[1:] == [str(NOBODY)] * 4, uid_line
    c1, c2 = portal_lab.lab.clients[:2]
    # Any host, any path, port 80: the device lands on the portal's own address.
    for url in ("http://198.51.100.10/news/today", "http://198.51.100.1/generate_204"):
        code, location, _ = _curl(c1, url)
        assert (code, location) == ("302", PORTAL + "/"), url
    # Log in over plain HTTP from the device, as a browser without JavaScript would.
    _, _, page = _curl(c1, PORTAL + "/")
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    code, _, body = _curl(
        c1,
        PORTAL + "/login",
        "--data-urlencode",
        "method=voucher",
        "--data-urlencode",
        f"code={portal_lab.heure}",
        "--data-urlencode",
        f"csrf={token.group(1)}",
    )
    assert code == "200" and "Vous êtes connecté" in body
    assert _curl(c1, "http://198.51.100.1/generate_204")[0] == "204"
    assert _curl(c2, "http://198.51.100.1/generate_204")[0] == "302"  # c2 is still captive
    code, _, body = _curl(c1, PORTAL + "/api/captive")
    assert code == "200" and '"captive":false' in body


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    return path


def _chromium_in(ns: str, workdir: Path) -> Path:
    """Playwright starts this 'browser': Debian's Chromium inside the device's namespace."""
    wrapper = workdir / f"chromium-{ns}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def test_real_browser_logs_in_with_a_voucher(portal_lab: PortalLab) -> None:
    if not CHROMIUM.exists():
        pytest.skip("browser test skipped: /usr/bin/chromium missing (make test installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    lab = portal_lab.lab
    c1, c2 = lab.clients[:2]
    with playwright.sync_playwright() as pw:
        phone = pw.chromium.launch(
            executable_path=str(_chromium_in(c1.ns, lab.workdir)), args=CHROMIUM_ARGS
        )
        ctx = phone.new_context(
            viewport={"width": 360, "height": 640}, locale="fr-FR", java_script_enabled=False
        )
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        # The phone opens any site; it is sent to the splash page.
        page.goto("http://198.51.100.10/")
        assert page.url == PORTAL + "/"
        assert "Mairie de Démo" in page.inner_text("header")
        assert page.is_visible("text=Pass 1 heure") and page.is_visible("text=100 FCFA")
        _shot(page, "01-splash-fr")
        page.fill("#code", format_code(new_local_code()))  # nobody issued it
        page.click("text=Se connecter")
        assert "Ce code n'existe pas" in page.inner_text("main")
        _shot(page, "02-error-fr")
        page.fill("#code", portal_lab.heure.lower())
        page.click("text=Se connecter")
        assert page.is_visible("text=Vous êtes connecté")
        assert "Pass 1 heure" in page.inner_text("main")
        _shot(page, "03-status-fr")
        page.goto(PORTAL + "/?lang=en")
        _shot(page, "04-splash-en")
        page.goto(PORTAL + "/status?lang=en")
        page.click("text=Log out")
        assert page.url.startswith(PORTAL + "/?lang=en")
        assert page.is_visible("text=Voucher code")
        phone.close()

        desk = pw.chromium.launch(
            executable_path=str(_chromium_in(c2.ns, lab.workdir)), args=CHROMIUM_ARGS
        )
        page = desk.new_page(
            viewport={"width": 360, "height": 640}, locale="fr-FR", java_script_enabled=False
        )
        page.set_default_timeout(10_000)
        page.goto(PORTAL + "/admin")
        _shot(page, "05-admin-login")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("text=Entrer")
        assert page.is_visible("text=Tableau de bord")
        assert c1.mac in page.inner_text("main")
        _shot(page, "06-admin-dashboard")
        page.fill("#count", "4")
        page.click("text=Émettre et imprimer")
        codes = re.findall(r"\b[2-9A-Z]{4}-?[2-9A-Z]{4}-?[2-9A-Z]{4}\b", page.inner_text("main"))
        assert len(codes) == 4
        _shot(page, "07-vouchers")
        desk.close()
