"""The caretaker's dashboard and the phone's status page, against the real agent handler
(sessions + caretaker desk on SQLite) over the real socket, served by uvicorn and looked at
by headless Chromium with JavaScript off. Plus the pure page helpers.

Screenshots: test-artifacts/caretaker/*.png (a person checks them; the test checks the
elements: device names, no hub in its own list, Débloquer, sales figures, contact)."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from html import unescape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
import yaml

from captive_portal.app import create_app
from captive_portal.dashboard import ago, peak_hours, usage_chart
from captive_portal.i18n import load_catalogue
from captive_portal.phone import low_balance, pass_end
from captive_portal.security import hash_password
from captive_portal.settings import build_settings
from hub_agent.api.protocol import HealthView, Pay, SessionView
from hub_agent.api.server import start_server
from hub_agent.caretaker import CARETAKER, Desk
from hub_agent.config import HubConfig, validate_config
from hub_agent.enforce.discovery import Device
from hub_agent.enforce.model import Counters, Grant
from hub_agent.handler import AgentHandler
from hub_agent.payments import Grant as PaidGrant
from hub_agent.payments import sign_grant, verify_grant
from hub_agent.purchases import Purchases
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService, device_pseudonym
from hub_agent.sessions.vouchers import make_central_code, month_index
from hub_agent.signing import SigningKey
from hub_agent.store import open_db
from tests.unit.phone_browser import phone_page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "caretaker"
LOME = ZoneInfo("Africa/Lome")
NOW = datetime(2026, 3, 14, 15, 30, tzinfo=LOME).timestamp()
PASSWORD = "gardien-2026"
HUB_MAC = "02:42:0a:2a:00:01"
PHONE, NAMED, BLOCKED = "02:00:00:00:02:01", "02:00:00:00:02:02", "02:00:00:00:02:03"
BUYER = "02:00:00:00:02:04"  # pays by mobile money
FR = load_catalogue()["fr"]
KEY = SigningKey.generate()  # the centre's key, for the mobile-money grant
SECRET = "caretaker-test-voucher-secret-0123456789"


def _t(lang: str = "fr") -> Any:
    cfg = validate_config(yaml.safe_load((ROOT / "examples" / "hub.yaml").read_text()))
    return build_settings(cfg).languages.translator(lang)


# --- pure helpers ------------------------------------------------------------------------
def test_low_balance_at_ten_percent_of_data_or_time() -> None:
    cfg = validate_config(yaml.safe_load((ROOT / "examples" / "hub.yaml").read_text()))

    def view(bytes_left: int | None, secs_left: int | None) -> SessionView:
        return SessionView(state="authorised", plan_id="heure", plan_name={"fr": "x"},
                           down_kbit=1, up_kbit=1, bytes_used=0, bytes_remaining=bytes_left,
                           seconds_remaining=secs_left, started_at=0)  # fmt: skip

    assert low_balance(view(31_000_000, 3000), cfg) is None  # 300 MB, 60 min plan
    assert low_balance(view(30_000_000, 3000), cfg) == "data"
    assert low_balance(view(200_000_000, 300), cfg) == "time"
    assert low_balance(view(20_000_000, 100), cfg) == "time"  # the nearer end wins


def test_pass_end_is_a_clock_time_in_lome() -> None:
    t = _t()
    assert pass_end(None, NOW, "Africa/Lome", t) is None
    assert pass_end(45 * 60, NOW, "Africa/Lome", t) == "fin à 16:15"
    assert pass_end(10 * 3600, NOW, "Africa/Lome", t) == "fin demain à 01:30"
    assert pass_end(3 * 86400, NOW, "Africa/Lome", t) == "fin le 17/03 à 15:30"
    assert pass_end(45 * 60, NOW, "Africa/Lome", _t("en")) == "ends at 16:15"


def test_chart_and_words() -> None:
    t = _t()
    hours = [0] * 24
    hours[12], hours[18], hours[19] = 5_000_000, 9_000_000, 7_000_000
    assert peak_hours(hours) == [18, 19]
    svg = str(usage_chart(hours, t))
    assert svg.startswith("<svg") and svg.count("<rect") == 24 and svg.count('class="pk"') == 2
    assert "<script" not in svg and len(svg) < 2500
    assert ago(30, t) == "à l'instant" and ago(600, t) == "il y a 10 min"


def test_every_new_text_is_in_both_languages() -> None:
    cat = load_catalogue()
    assert set(cat["fr"]) == set(cat["en"]), set(cat["fr"]) ^ set(cat["en"])


# --- the hub: real handler and desk on SQLite, portal under uvicorn -----------------------
class _Kernel:
    def authorize(self, grant: Grant) -> None: ...
    def deauthorize(self, mac: str) -> None: ...


@dataclass
class Site:
    url: str
    config: HubConfig
    service: SessionService
    desk: Desk


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health() -> HealthView:
    return HealthView(cpu_pct=12.6, mem_pct=41.0, disk_pct=63.0, temperature_c=48.5,
                      uplink_up=False, uplink_latency_ms=None, broker_connected=False,
                      config_version=7, cache_used_mb=1234.5, cache_items=42)  # fmt: skip


def _at(h: int, m: int = 0) -> float:
    return datetime(2026, 3, 14, h, m, tzinfo=LOME).timestamp()


def _seed(svc: SessionService, desk: Desk) -> None:
    """A Saturday at a mairie: tickets sold and used, traffic at noon and in the evening,
    a named tablet, a blocked phone, and the hub itself recorded by an older agent."""
    svc.record_devices([
        Device(PHONE, "127.0.0.1", hostname="tecno-spark", last_seen=NOW - 30),
        Device(NAMED, "10.42.0.102", hostname="android-5f3a", last_seen=NOW - 600),
        Device(BLOCKED, "10.42.0.103", hostname="itel-a70", last_seen=NOW - 7200),
        Device(HUB_MAC, "10.42.0.1", hostname="relais-hub", last_seen=NOW),
    ])  # fmt: skip
    desk.name_device(NAMED, "Tablette du secrétariat")
    svc.block(BLOCKED, True, NOW - 3600)
    codes = svc.issue_local_vouchers("heure", 6, _at(8))
    svc.issue_local_vouchers("jour", 2, _at(8))
    svc.login(NAMED, "10.42.0.102", "voucher", codes[1], _at(11, 50))
    svc.account({NAMED: Counters(NAMED, 1_000_000, 40_000_000, False)}, _at(12, 10))
    desk.tick(_at(12, 10))
    svc.login(PHONE, "127.0.0.1", "voucher", codes[0], NOW - 600)
    svc.account({PHONE: Counters(PHONE, 5_000_000, 275_000_000, False)}, NOW - 60)
    desk.tick(NOW - 60)


def _sell_by_mobile_money(config: HubConfig, svc: SessionService, db: Any) -> None:
    """A visitor's phone buys "jour" (300 FCFA) by mobile money at 14:00: the real purchase
    path, a grant signed with the centre's key, applied through the normal login."""
    svc.record_devices([Device(BUYER, "10.42.0.104", hostname="samsung-a14", last_seen=_at(14))])
    shop = Purchases(db, lambda: config, svc, lambda: _Kernel())
    shop.online = lambda: True
    bought = shop.pay(Pay(ip="10.42.0.104", plan_id="jour", phone="90123456"), BUYER, _at(13, 58))
    assert bought.purchase is not None
    grant = PaidGrant(
        hub_id=config.hub.id, ref="RL-TEST-1", request_id=bought.purchase.ref, plan="jour",
        device=device_pseudonym(SECRET.encode(), BUYER),
        code=make_central_code(SECRET.encode(), "jour", month_index(_at(14)), 1),
        amount=300, currency="XOF", paid_at=_at(14),
    )  # fmt: skip
    assert shop.apply_grant(verify_grant(sign_grant(KEY, grant), KEY.public_b64, config.hub.id),
                            _at(14))  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("caretaker")
    data = yaml.safe_load((ROOT / "examples" / "hub.yaml").read_text())
    data["portal"].update(agent_socket=str(tmp / "agent.sock"),
                          admin_password_hash=hash_password(PASSWORD, log2_n=10))  # fmt: skip
    data["data_dir"] = str(tmp)
    data["trust"] = {"central_public_key": KEY.public_b64, "voucher_secret": SECRET}
    config = validate_config(data)
    db = open_db(tmp / "hub.db", SESSIONS, CARETAKER)
    svc = SessionService(config, db)
    clock = lambda: NOW  # noqa: E731
    desk = Desk(db, lambda: config, lambda: False, lambda: frozenset({HUB_MAC}), clock)
    desk.uplink.observe(False, NOW - 12 * 60)  # the Internet went down 12 minutes ago
    _seed(svc, desk)
    _sell_by_mobile_money(config, svc, db)
    handler = AgentHandler(
        svc, _Kernel(), mac_for_ip={"127.0.0.1": PHONE}.get, health=_health,
        uplink_up=lambda: False, clock=clock, executor=ThreadPoolExecutor(1), caretaker=desk,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def agent_main() -> None:
        await start_server(config.portal.agent_socket, handler, group=None)
        started.set()

    agent = threading.Thread(target=lambda: (loop.run_until_complete(agent_main()),
                                             loop.run_forever()), daemon=True)  # fmt: skip
    agent.start()
    assert started.wait(10)
    port = _free_port()
    settings = build_settings(config, listen_port=port)
    app = create_app(config, secret=b"s" * 32, settings=settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    web = threading.Thread(target=server.run, daemon=True)
    web.start()
    for _ in range(200):  # wait on the condition, not a fixed time
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started
    try:
        yield Site(f"http://127.0.0.1:{port}", config, svc, desk)
    finally:
        server.should_exit = True
        web.join(10)
        loop.call_soon_threadsafe(loop.stop)
        agent.join(10)
        # what the agent's server still runs (the portal's Watch long poll): ended here,
        # not left for the garbage collector to report in some later test
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def _admin_page(site: Site) -> tuple[Any, str]:
    import httpx

    c = httpx.Client(base_url=site.url)
    page = c.get("/admin").text
    token = page.split('name="csrf" value="')[1].split('"')[0]
    r = c.post("/admin/login", data={"password": PASSWORD, "csrf": token})
    assert r.status_code == 303
    return c, c.get("/admin").text


def test_screenshots_dashboard_and_low_balance_status(site: Site) -> None:
    with phone_page(ARTIFACTS) as page:
        page.set_default_timeout(10_000)
        page.goto(site.url + "/status")
        main = page.inner_text("main")
        assert "10 % de vos données ou moins" in main
        assert "fin " in main and "Besoin d'aide ?" in page.inner_text("footer")
        assert "+228 90 00 00 00" in page.inner_text("footer")
        page.screenshot(path=str(ARTIFACTS / "status-low-balance-fr.png"), full_page=True)
        page.goto(site.url + "/admin")
        page.fill("#password", PASSWORD)
        page.click("text=Entrer")
        assert page.is_visible("text=Tableau de bord")
        main = page.inner_text("main")
        assert "Tablette du secrétariat" in main and HUB_MAC not in main
        assert "Débloquer" in main and "1\u202f200 FCFA" in main
        sales = page.inner_text("#sales-now")  # today's and the month's, cash and mobile
        assert "Tickets vendus ici (espèces)\t8 · 1\u202f200 FCFA\t8 · 1\u202f200 FCFA" in sales
        assert "Mobile money (T-Money, Flooz)\t1 · 300 FCFA\t1 · 300 FCFA" in sales
        assert page.is_visible("svg.chart")
        page.screenshot(path=str(ARTIFACTS / "dashboard-fr.png"), full_page=True)
        page.goto(site.url + "/admin?lang=en")
        assert "Unblock" in page.inner_text("main")
    for name in ("status-low-balance-fr.png", "dashboard-fr.png"):
        assert (ARTIFACTS / name).stat().st_size > 5000


def test_dashboard_names_sales_health_and_no_hub(site: Site) -> None:
    c, raw = _admin_page(site)
    assert len(raw.encode()) < 30 * 1024 and "<script" not in raw
    page = unescape(raw)
    assert "Tablette du secrétariat" in page and "android-5f3a" in page  # given name, hostname
    assert "tecno-spark" in page and "vu il y a 4 h" in page  # (the phone: just now)
    assert HUB_MAC not in page and "relais-hub" not in page and "10.42.0.1 " not in page
    assert page.count(">Bloquer<") == 5  # 3 phones, the staff PC, the MAC form; not the hub
    blocked = page.split('id="blocked"')[1].split("</div>\n<form")[0]
    assert "itel-a70" in blocked and ">Débloquer<" in blocked
    # 6 + 2 tickets sold today (heure 100, jour 300 FCFA), 2 used (heure)
    assert "sam. 14/03" in page and ">8<" in page and "1\u202f200 FCFA" in page
    assert ">200 FCFA<" in page and "mars 2026" in page
    now = page.split('id="sales-now"')[1].split("</table>")[0]
    assert "Aujourd'hui" in now and "Ce mois-ci" in now
    assert re.search(r"Mobile money \(T-Money, Flooz\)</th><td[^>]*>1 · 300 FCFA</td>", now)
    assert ">Mobile money<" in page and ">1<br><small>300 FCFA</small><" in page
    assert "Internet : coupé depuis 12 min — appelez le +228 22 00 00 00" in page
    assert "Version de configuration" not in page and "<svg" in page
    assert "Heures de pointe : 12 h-13 h, 15 h-16 h" in page
    assert "+228 90 00 00 00" in page  # the hub's contact
    # naming a device through the page's form, and the hub refused as a block target
    token = page.split('name="csrf" value="')[1].split('"')[0]
    r = c.post("/admin/name", data={"mac": PHONE, "name": "Téléphone de Kossi", "csrf": token})
    assert "msg=named" in r.headers["location"]
    assert "Téléphone de Kossi" in c.get("/admin").text
    r = c.post("/admin/block", data={"mac": HUB_MAC, "blocked": "1", "csrf": token})
    assert "msg=own_hub" in r.headers["location"]
    # printed tickets: XXXX-XXXX-XXXX with the central sheets' QR code, and the PDF sheet
    r = c.post("/admin/vouchers", data={"plan_id": "jour", "count": "50", "csrf": token})
    assert r.status_code == 200 and len(r.content) < 30 * 1024
    shown = re.findall(r'class="ticket">.*?<b>([^<]+)</b>', r.text)[0]
    assert len(shown) == 14 and shown.count("-") == 2, shown
    qr = c.get(f"/admin/qr/{shown.replace('-', '')}.svg")
    assert qr.status_code == 200 and qr.headers["content-type"].startswith("image/svg+xml")
    assert b"<path" in qr.content
    pdf = c.get(r.text.split('href="')[1].split('"')[0].replace("&amp;", "&"))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    c.close()
