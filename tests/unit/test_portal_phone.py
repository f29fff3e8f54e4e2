"""The phone's side of issue 18 against the real agent (tests/unit/real_agent.py): where a
mistyped code is wrong, the lock said when it falls, "prolonger" on the status page exactly
when RFC 8908 says ``can-extend-session``, the low-balance warning at 10% left, and a
headless Chromium screenshot of that status page (test-artifacts/phone/*.png)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

from hub_agent.api.protocol import Login
from hub_agent.sessions.vouchers import format_code, new_local_code, normalise_code, typo_position
from tests.unit.phone_browser import phone_page
from tests.unit.real_agent import DEV1, DEV2, DEV3, MAC1, MAC2, MAC3, Hub, login, running_hub
from tests.unit.test_portal_pay import Centre

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "phone"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as h:
        yield h


def _page(r: object) -> str:
    return unescape(r.text)  # type: ignore[attr-defined]


# --- a mistyped code -----------------------------------------------------------------------
def test_a_mistyped_code_says_which_character_to_check(hub: Hub) -> None:
    code = hub.agent.issue("heure")  # printed as XXXX-XXXX-XXXX
    assert len(code) == 14
    c = hub.client()
    typed = code[:7] + "O" + code[8:]  # n° 7 (the dash not counted): O is never printed
    r = login(c, typed)
    page = _page(r)
    assert r.status_code == 400 and "Ce code n'existe pas" in page
    assert "Vérifiez le caractère n° 7 (groupe 2, position 3)." in page
    # The agent's answer carries it (the portal only words it).
    resp = hub.agent.ask(Login(ip=DEV1, method="voucher", code=typed))
    assert (resp.error, resp.typo_position) == ("unknown_code", 7)
    # A well-formed code nobody issued: nothing to point at, and nothing said about codes.
    r = login(c, format_code(new_local_code()))
    assert "Vérifiez le caractère" not in _page(r)


def test_a_code_the_device_already_used_is_located_exactly(hub: Hub) -> None:
    code = normalise_code(hub.agent.issue("heure")) or ""
    c = hub.client()
    assert login(c, code).status_code == 200
    for pos in range(12):  # any slip, at any place, in a code this phone typed before
        wrong = "B" if code[pos] != "B" else "C"
        typed = format_code(code[:pos] + wrong + code[pos + 1 :])
        resp = hub.agent.ask(Login(ip=DEV1, method="voucher", code=typed))
        assert (resp.error, resp.typo_position) == ("unknown_code", pos + 1)
    typed = code[:4] + ("B" if code[4] != "B" else "C") + code[5:]
    resp = hub.agent.ask(Login(ip=DEV1, method="voucher", code=typed))
    assert resp.typo_position == 5
    # Another phone typing the same slip gets what the typed text alone says: nothing
    # drawn from this phone's codes, nor from the hub's.
    other = hub.agent.ask(Login(ip=DEV2, method="voucher", code=typed))
    assert other.error == "unknown_code" and other.typo_position == typo_position(typed)


# --- the wrong code that locks -------------------------------------------------------------
def test_the_wrong_code_that_locks_says_the_device_is_locked(tmp_path: Path) -> None:
    with running_hub(tmp_path, login_attempts=3) as hub:
        c = hub.client()
        pages = [_page(login(c, format_code(new_local_code()))) for _ in range(2)]
        assert "Encore 1 essai(s)" in pages[1]
        resp_page = login(c, format_code(new_local_code()))
        page = _page(resp_page)
        assert resp_page.status_code == 429 and "retry-after" in resp_page.headers
        assert "Trop d'essais : cet appareil est bloqué pendant 5 min." in page
        assert "Encore 0" not in page and "essai(s)" not in page
        # The agent's answer: locked, so no "attempts left"
        r = hub.agent.ask(Login(ip=DEV1, method="voucher", code=format_code(new_local_code())))
        assert r.retry_after and r.attempts_left is None


# --- prolonger and can-extend-session --------------------------------------------------------
def _extend(hub: Hub, ip: str) -> tuple[bool, bool]:
    c = hub.client(ip)
    page = _page(c.get("/status"))
    doc = json.loads(c.get("/api/captive").text)
    return 'href="#prolonger"' in page and 'action="/pay"' in page, doc["can-extend-session"]


def test_prolonger_is_offered_exactly_when_rfc8908_says_can_extend(hub: Hub) -> None:
    # No mobile money on this hub: neither the page nor the API offers more.
    assert login(hub.client(DEV1), hub.agent.issue("heure")).status_code == 200
    assert _extend(hub, DEV1) == (False, False)
    centre = Centre(hub)  # mobile money attached and working
    assert login(hub.client(DEV2), hub.agent.issue("heure")).status_code == 200
    assert _extend(hub, DEV2) == (True, True)
    page = _page(hub.client(DEV2).get("/status"))
    assert "Prolonger" in page and "FCFA" in page and len(page.encode()) < 30 * 1024
    centre.online = False  # the centre is out of reach: the offer goes, on both
    assert login(hub.client(DEV3), hub.agent.issue("heure")).status_code == 200
    assert _extend(hub, DEV3) == (False, False)
    # A captive device is never told it can extend.
    assert (
        json.loads(hub.client("10.42.0.104").get("/api/captive").text)["can-extend-session"]
        is False
    )


# --- low balance at 10% --------------------------------------------------------------------
def test_low_balance_warning_starts_at_exactly_ten_percent(hub: Hub) -> None:
    warn = "il vous reste 10 % de vos données ou moins"
    c1, c2, c3 = hub.client(DEV1), hub.client(DEV2), hub.client(DEV3)
    for c in (c1, c2, c3):
        assert login(c, hub.agent.issue("heure")).status_code == 200  # 300 MB, 60 min
    hub.agent.use_bytes(MAC1, 270_000_000 - 1)  # 10% and one byte left
    hub.agent.use_bytes(MAC2, 270_000_000)  # 10% left exactly
    assert warn not in _page(c1.get("/status"))
    assert warn in _page(c2.get("/status"))
    for _ in range(6):  # 6 of 60 minutes left: 10% of the time, sooner than data
        hub.clock.now += 9 * 60  # (with some traffic: not idle)
        hub.agent.use_bytes(MAC3, 1)
    page = _page(c3.get("/status"))
    assert "10 % de votre temps ou moins" in page and warn not in page
    assert "6 min" in page and "(fin à " in page  # the clock time (the portal's clock)


# --- the screenshot ------------------------------------------------------------------------
def test_screenshot_status_with_low_balance_and_prolonger(hub: Hub) -> None:
    Centre(hub)
    c = hub.client()
    assert login(c, hub.agent.issue("jour")).status_code == 200
    hub.agent.use_bytes(MAC1, 950_000_000)
    with phone_page(ARTIFACTS, c.get("/status").text) as page:
        main = page.inner_text("main")
        assert "10 % de vos données ou moins" in main
        assert "Prolonger" in main and "Payer par mobile money" in main and "FCFA" in main
        assert page.is_visible("a[href='#prolonger']")
        page.screenshot(path=str(ARTIFACTS / "status-low-balance-prolonger-fr.png"), full_page=True)


def test_screenshot_splash_with_plans_mobile_money_and_help(tmp_path: Path) -> None:
    """The splash a new phone sees (issue 18, 19): plans with their FCFA price, the code in
    its one format, mobile money, free access, the hub's contact; French first."""
    with running_hub(tmp_path) as hub:
        Centre(hub)
        html = hub.client().get("/").text
    with phone_page(ARTIFACTS, html) as page:
        assert page.get_attribute("#code", "placeholder") == "XXXX-XXXX-XXXX"
        assert page.is_visible("text=Se connecter")
        plans = page.inner_text("ul.plans >> nth=0")
        assert "Pass 1 heure" in plans and "100 FCFA" in plans and "300 FCFA" in plans
        pay = page.inner_text("form[action='/pay']")
        assert "Payer par mobile money" in pay and "T-Money" in pay and "Flooz" in pay
        assert page.is_visible("#phone") and page.is_visible("text=Accès gratuit >> nth=0")
        assert "Besoin d'aide ?" in page.inner_text("footer")
        assert "+228 90 00 00 00" in page.inner_text("footer")
        assert page.locator("script").count() == 0
        page.screenshot(path=str(ARTIFACTS / "splash-fr.png"), full_page=True)
    assert (ARTIFACTS / "splash-fr.png").stat().st_size > 5000


def test_status_page_says_where_else_a_roaming_pass_was_used() -> None:
    """Issue 20: a central code's balance follows it; the page says where it was used."""
    from captive_portal.agent import DeviceState
    from captive_portal.render import Renderer, status_context
    from captive_portal.settings import build_settings
    from hub_agent.api.protocol import SessionView, UsedElsewhere
    from tests.unit.real_agent import portal_config

    settings = build_settings(portal_config(Path("/run/relais/agent.sock")))
    t = settings.languages.translator("fr")
    s = SessionView(
        state="authorised", plan_id="jour", plan_name={"fr": "Pass 1 jour"}, down_kbit=2000,
        up_kbit=1000, bytes_used=0, bytes_remaining=700_000_000, seconds_remaining=3600,
        started_at=0.0, used_elsewhere=[UsedElsewhere(hub="EPP Bè-Kpota", bytes=300_000_000)],
    )  # fmt: skip
    ctx = status_context(settings, t, DeviceState(True, None, True), s, csrf="x", now=0.0)
    page = unescape(Renderer().page("status.html", ctx))
    assert "Ce forfait a aussi servi à : EPP Bè-Kpota (300 Mo)." in page
    assert "700 Mo" in page
    offline = status_context(
        settings, t, DeviceState(True, None, True), s.model_copy(update={"balance_offline": True}),
        csrf="x", now=0.0,
    )  # fmt: skip
    assert "Le centre n'a pas pu être joint" in unescape(Renderer().page("status.html", offline))
