"""The portal over HTTP: every route, each probe authorised and not, RFC 8908, languages,
errors, CSRF and the lockout. The portal talks over the real UNIX socket and protocol to a
TEST agent (tests/unit/portal_agent.py) that keeps devices and vouchers in memory."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

from captive_portal.routes.probes import APPLE_SUCCESS, FIREFOX_CANONICAL
from tests.unit.portal_agent import (
    DEV1,
    DEV2,
    HUB_URL,
    MAC1,
    MAC2,
    Hub,
    csrf_of,
    login,
    running_hub,
)

SPLASH = HUB_URL + "/"
AUTHORISED = {
    "/generate_204": (204, "", None),
    "/gen_204": (204, "", None),
    "/hotspot-detect.html": (200, APPLE_SUCCESS, "text/html"),
    "/library/test/success.html": (200, APPLE_SUCCESS, "text/html"),
    "/connecttest.txt": (200, "Microsoft Connect Test", "text/plain"),
    "/ncsi.txt": (200, "Microsoft NCSI", "text/plain"),
    "/canonical.html": (200, FIREFOX_CANONICAL, "text/html"),
    "/success.txt": (200, "success\n", "text/plain"),
}
PROBE_HOSTS = {
    "/generate_204": "connectivitycheck.gstatic.com",
    "/gen_204": "clients3.google.com",
    "/hotspot-detect.html": "captive.apple.com",
    "/library/test/success.html": "www.apple.com",
    "/connecttest.txt": "www.msftconnecttest.com",
    "/ncsi.txt": "www.msftncsi.com",
    "/canonical.html": "detectportal.firefox.com",
    "/success.txt": "detectportal.firefox.com",
}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as h:
        h.agent.add_voucher("HEUR-0001", "heure")
        h.agent.add_voucher("JOUR-0001", "jour")
        yield h


def _probe(hub: Hub, path: str, ip: str = DEV1):
    # The OS asks its own host; nftables delivers it to the portal unchanged.
    return hub.client(ip, base_url=f"http://{PROBE_HOSTS[path]}").get(path)


def _assert_captive(hub: Hub, ip: str = DEV1) -> None:
    for path in AUTHORISED:
        r = _probe(hub, path, ip)
        assert r.status_code == 302, (path, r.status_code)
        assert r.headers["location"] == SPLASH, path


def _assert_free(hub: Hub, ip: str = DEV1) -> None:
    for path, (status, body, media) in AUTHORISED.items():
        r = _probe(hub, path, ip)
        assert r.status_code == status, path
        assert r.text == body, path
        if media:
            assert r.headers["content-type"].split(";")[0] == media, path


# --- splash and languages ----------------------------------------------------------------
def test_splash_in_french_by_default(hub: Hub) -> None:
    r = hub.client().get("/")
    assert r.status_code == 200
    page = r.text
    assert '<html lang="fr">' in page
    assert "Mairie de Démo" in page and ">Mairie<" not in page and "Mairie ·" in page
    assert "Pass 1 heure" in page and "100 FCFA" in page
    assert "Pass journée" in page and "300 FCFA" in page
    assert "300 Mo · 1 h 00 · 2 Mbit/s" in page
    assert "Usage loyal : pas de contenu illégal" in page
    assert 'action="/login"' in page and 'name="code"' in page
    assert 'value="free"' in page and 'type="checkbox" name="terms"' in page
    assert 'href="/content/"' in page
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        ("", "en-GB,en;q=0.9", "en"),
        ("", "de-DE, en;q=0.5, fr;q=0.4", "en"),
        ("", "de-DE", "fr"),
        ("", "en;q=0, fr", "fr"),
        ("?lang=en", "fr-FR", "en"),
        ("?lang=fr", "en-US", "fr"),
        ("?lang=xx", "en", "en"),
    ],
)
def test_language_by_query_then_accept_language(
    hub: Hub, query: str, accept: str, expected: str
) -> None:
    page = hub.client().get("/" + query, headers={"Accept-Language": accept}).text
    assert f'<html lang="{expected}">' in page
    if expected == "en":
        assert "1-hour pass" in page and "Fair use: no illegal content" in page
        assert "300 MB · 1 h 00 min · 2 Mbit/s" in page
    else:
        assert "Pass 1 heure" in page


def test_code_prefilled_and_escaped(hub: Hub) -> None:
    c = hub.client()
    assert 'value="ABCD-1234"' in c.get("/?code=ABCD-1234").text
    page = c.get('/?code="><script>alert(1)</script>').text
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_pages_are_small_and_self_contained(hub: Hub) -> None:
    c = hub.client()
    pages = [c.get("/").text, c.get("/?lang=en").text, login(c, "HEUR-0001").text]
    pages.append(c.get("/status").text)
    for page in pages:
        assert len(page.encode()) <= 30 * 1024
        assert "<script" not in page.lower()
        assert not re.search(r'(src|href)="(https?:)?//', page), "external resource"
        assert "<style>" in page  # CSS inline


# --- login, status, logout, probes ---------------------------------------------------------
def test_voucher_login_flips_every_probe_and_logout_flips_back(hub: Hub) -> None:
    c = hub.client()
    _assert_captive(hub)
    assert c.get("/status").status_code == 303
    r = login(c, "heur-0001 ")  # case and spaces as typed on a phone
    assert r.status_code == 200
    assert "Vous êtes connecté" in r.text and "Connexion réussie" in r.text
    assert "Pass 1 heure" in r.text and "300 Mo" in r.text and "1 h 00" in r.text
    assert "2 Mbit/s ↓ · 1 Mbit/s ↑" in r.text
    _assert_free(hub)
    _assert_captive(hub, DEV2)  # the other device is still captive
    status = c.get("/status?lang=en")
    assert status.status_code == 200 and "Data left" in status.text and "300 MB" in status.text
    r = c.post("/logout", data={"csrf": csrf_of(status.text), "lang": "en"})
    assert r.status_code == 303 and r.headers["location"] == "/?lang=en"
    _assert_captive(hub)
    assert hub.agent.sessions[MAC1].ended_reason == "logout"


@pytest.mark.parametrize("reason", ["data_quota", "time_quota", "idle", "caretaker"])
def test_next_probe_redirects_after_the_session_ends(hub: Hub, reason: str) -> None:
    assert login(hub.client(), "JOUR-0001").status_code == 200
    _assert_free(hub)
    hub.agent.end(MAC1, reason)
    _assert_captive(hub)
    assert hub.client().get("/status").status_code == 303


def test_throttled_session_is_still_through_and_says_so(hub: Hub) -> None:
    c = hub.client()
    login(c, "JOUR-0001")
    hub.agent.use_bytes(MAC1, 2_000_000_000)  # the day pass throttles instead of cutting
    _assert_free(hub)
    page = c.get("/status").text
    assert "le débit est réduit" in page and "128 kbit/s" in page


def test_free_tier_needs_the_terms_then_once_a_day(hub: Hub) -> None:
    c = hub.client()
    r = login(c, method="free")
    assert r.status_code == 400 and "Cochez la case" in r.text
    _assert_captive(hub)
    r = login(c, method="free", terms="1")
    assert r.status_code == 200 and "Accès gratuit" in r.text and "100 Mo" in r.text
    _assert_free(hub)
    c.post("/logout", data={"csrf": csrf_of(c.get("/status").text)})
    r = login(c, method="free", terms="1")
    assert r.status_code == 400 and "accès gratuit du jour est épuisé" in r.text


@pytest.mark.parametrize(
    ("setup", "code", "status", "fr", "en"),
    [
        ("none", "NOPE-0000", 400, "Ce code n'existe pas", "This code does not exist"),
        ("used_up", "HEUR-0002", 400, "déjà entièrement utilisé", "already fully used"),
        ("expired", "HEUR-0003", 400, "Ce ticket a expiré", "This voucher has expired"),
        ("revoked", "HEUR-0004", 400, "a été annulé", "was cancelled"),
        ("blocked", "HEUR-0001", 403, "a été bloqué", "has been blocked"),
        ("missing", "", 400, "Saisissez le code", "Enter the code"),
    ],
)
def test_login_errors_rerender_the_splash_localised_with_the_form_kept(
    hub: Hub, setup: str, code: str, status: int, fr: str, en: str
) -> None:
    a = hub.agent
    if setup == "used_up":
        a.add_voucher("HEUR-0002", "heure")
        assert login(hub.client(DEV2), "HEUR-0002").status_code == 200
    elif setup == "expired":
        a.add_voucher("HEUR-0003", "heure", expires_at=time.time() - 1)
    elif setup == "revoked":
        a.add_voucher("HEUR-0004", "heure", revoked=True)
    elif setup == "blocked":
        a.blocked.add(MAC1)
    c = hub.client()
    for lang, text in (("fr", fr), ("en", en)):
        r = login(c, code, lang=lang)
        assert r.status_code == status
        assert f'<html lang="{lang}">' in r.text
        assert text in unescape(r.text) and 'class="n n-error"' in r.text
        assert f'name="code" value="{code}"' in r.text
    _assert_captive(hub)


def test_method_disabled_when_the_hub_offers_only_vouchers(tmp_path: Path) -> None:
    with running_hub(tmp_path, login_methods=["voucher"]) as hub:
        c = hub.client()
        assert 'value="free"' not in c.get("/").text
        r = login(c, method="free", terms="1")
        assert r.status_code == 400 and "n'est pas proposé ici" in unescape(r.text)
        assert "login" not in hub.agent.calls


def test_unknown_device_is_told_to_reconnect(hub: Hub) -> None:
    r = login(hub.client("10.42.0.200"), "HEUR-0001")
    assert r.status_code == 400 and "Reconnectez-vous au Wi-Fi" in r.text


# --- CSRF and lockout ------------------------------------------------------------------------
def test_login_without_a_valid_csrf_token_is_refused(hub: Hub) -> None:
    c = hub.client()
    forged = {"method": "voucher", "code": "HEUR-0001"}
    for token in ("", "123.deadbeef", "garbage"):
        r = c.post("/login", data={**forged, "csrf": token})
        assert r.status_code == 403 and "Le formulaire a expiré" in r.text
    # A token is bound to the device it was given to.
    other = csrf_of(hub.client(DEV2).get("/").text)
    assert c.post("/login", data={**forged, "csrf": other}).status_code == 403
    # And to its form: the logout token does not log in.
    assert "login" not in hub.agent.calls
    _assert_captive(hub)
    r = c.post("/logout", data={"csrf": other})
    assert r.status_code == 403 and "logout" not in hub.agent.calls


def test_wrong_codes_lock_the_device_out_for_the_window(hub: Hub) -> None:
    c = hub.client()
    limit = hub.config.portal.login_attempts
    for i in range(limit):
        assert login(c, f"BAD-{i:04d}").status_code == 400
    agent_logins = hub.agent.calls.count("login")
    r = login(c, "HEUR-0001")  # even the right code waits: the window is per device
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) == hub.config.portal.lockout_seconds
    assert "Trop d'essais. Réessayez dans 5 min." in unescape(r.text)
    assert 'value="HEUR-0001"' in r.text
    assert hub.agent.calls.count("login") == agent_logins  # the agent was not asked
    assert login(hub.client(DEV2), "JOUR-0001").status_code == 200  # others unaffected
    hub.clock.now += hub.config.portal.lockout_seconds
    assert login(c, "HEUR-0001").status_code == 200


# --- RFC 8908 ------------------------------------------------------------------------------
def test_captive_api_before_and_after_login(hub: Hub) -> None:
    c = hub.client()
    r = c.get("/api/captive")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/captive+json"
    assert r.headers["cache-control"] == "private"
    doc = json.loads(r.text)
    assert doc == {
        "captive": True,
        "user-portal-url": SPLASH,
        "venue-info-url": SPLASH + "content/",
        "can-extend-session": False,
    }
    login(c, "HEUR-0001")
    doc = c.get("/api/captive").json()
    assert doc["captive"] is False and doc["can-extend-session"] is True
    assert 3500 < doc["seconds-remaining"] <= 3600
    assert doc["bytes-remaining"] == 300_000_000
    hub.agent.use_bytes(MAC1, 100_000_000)
    assert c.get("/api/captive").json()["bytes-remaining"] == 200_000_000


# --- fail closed, offline, foreign hosts --------------------------------------------------
def test_agent_down_fails_closed(tmp_path: Path) -> None:
    with running_hub(tmp_path, agent_up=False) as hub:
        hub.agent.add_voucher("HEUR-0001", "heure")
        c = hub.client()
        page = c.get("/").text
        assert "momentanément indisponible" in page
        r = login(c, "HEUR-0001")
        assert r.status_code == 503 and "Personne ne peut se connecter" in r.text
        _assert_captive(hub)
        assert c.get("/api/captive").json()["captive"] is True
        assert c.get("/status").status_code == 303
        assert c.post("/logout", data={"csrf": csrf_of(page)}).status_code in (403, 503)


def test_offline_hub_keeps_vouchers_free_tier_and_library_working(hub: Hub) -> None:
    hub.agent.uplink_up = False
    c = hub.client()
    page = c.get("/").text
    assert "Internet est indisponible pour le moment" in page and 'href="/content/"' in page
    r = login(c, "HEUR-0001")
    assert r.status_code == 200 and "Internet est indisponible" in r.text
    r = login(hub.client(DEV2), method="free", terms="1", lang="en")
    assert r.status_code == 200 and "The internet is unavailable for now" in r.text


def test_foreign_host_goes_to_the_splash_on_the_hub_address(hub: Hub) -> None:
    for url in ("http://example.com/some/page?q=1", "http://example.com/", "http://10.0.0.9/x"):
        c = hub.client(base_url=url.split("/", 3)[0] + "//" + url.split("/", 3)[2])
        r = c.get("/" + url.split("/", 3)[3])
        assert r.status_code == 302 and r.headers["location"] == SPLASH, url
        assert c.post("/login", data={}).headers["location"] == SPLASH
    assert hub.client().get("/nope").status_code == 404  # own host: a plain 404


# --- the caretaker dashboard ----------------------------------------------------------------
def _admin(hub: Hub, password: str, ip: str = DEV1):
    c = hub.client(ip)
    page = c.get("/admin")
    r = c.post("/admin/login", data={"password": password, "csrf": csrf_of(page.text)})
    return c, r


def test_admin_needs_a_login(hub: Hub) -> None:
    c = hub.client()
    r = c.get("/admin")
    assert r.status_code == 401 and 'type="password"' in r.text and MAC1 not in r.text
    for path in ("/admin/disconnect", "/admin/block", "/admin/vouchers"):
        r = c.post(path, data={"mac": MAC1, "plan_id": "heure", "csrf": "x"})
        assert r.status_code == 401, path
    assert hub.agent.calls.count("devices") == 0 and "block" not in hub.agent.calls
    c.cookies.set("relais_admin", "forged-session", domain="10.42.0.1", path="/admin")
    assert c.get("/admin").status_code == 401


def test_admin_login_cookie_and_dashboard(hub: Hub) -> None:
    login(hub.client(DEV2), "HEUR-0001")
    c, r = _admin(hub, "wrong")
    assert r.status_code == 401 and "Mot de passe incorrect" in r.text
    c, r = _admin(hub, "gardien-2026")
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    for attr in ("relais_admin=", "HttpOnly", "SameSite=strict", "Path=/admin"):
        assert attr.lower() in cookie.lower(), attr
    page = c.get("/admin").text
    assert MAC2 in page and "tecno-spark" in page and "Pass 1 heure" in page
    assert "Processeur" in page and "13 %" in page  # 12.6 %, rounded
    assert "48,5 °C" in page and "en service (35 ms)" in page
    assert "1,23 Go sur 20 Go (42 éléments)" in page  # cache status
    assert "Version de configuration (agent)" in page
    assert "Pass journée" in page and "1 Go · 1 j 0 h · 4 Mbit/s" in page  # quotas
    assert len(page.encode()) <= 30 * 1024


def test_admin_actions_disconnect_block_unblock(hub: Hub) -> None:
    user = hub.client(DEV2)
    login(user, "HEUR-0001")
    _assert_free(hub, DEV2)
    c, _ = _admin(hub, "gardien-2026")
    token = csrf_of(c.get("/admin").text)
    r = c.post("/admin/disconnect", data={"mac": MAC2.upper(), "csrf": token})
    assert r.status_code == 303 and "msg=disconnected" in r.headers["location"]
    _assert_captive(hub, DEV2)
    assert "Appareil déconnecté" in c.get(r.headers["location"]).text
    r = c.post("/admin/block", data={"mac": MAC2, "blocked": "1", "csrf": token})
    assert "msg=blocked" in r.headers["location"]
    assert login(user, "HEUR-0001").status_code == 403
    r = c.post("/admin/block", data={"mac": MAC2, "blocked": "0", "csrf": token})
    assert "msg=unblocked" in r.headers["location"]
    assert login(user, "HEUR-0001").status_code == 200
    r = c.post("/admin/block", data={"mac": "not-a-mac", "csrf": token})
    assert "msg=bad_mac" in r.headers["location"]
    # A token from before the session (or another one) is refused.
    r = c.post("/admin/disconnect", data={"mac": MAC2, "csrf": "1.abc"})
    assert r.status_code == 403
    _assert_free(hub, DEV2)


def test_admin_issues_printable_vouchers_that_work(hub: Hub) -> None:
    c, _ = _admin(hub, "gardien-2026")
    token = csrf_of(c.get("/admin").text)
    r = c.post("/admin/vouchers", data={"plan_id": "jour", "count": "6", "csrf": token})
    assert r.status_code == 200
    codes = re.findall(r"<b>([A-Z0-9]{4}-[A-Z0-9]{4})</b>", r.text)
    assert len(codes) == 6 and len(set(codes)) == 6
    assert "Pass journée" in r.text and "300 FCFA" in r.text and "@media print" in r.text
    assert login(hub.client(DEV2), codes[3]).status_code == 200
    r = c.post("/admin/vouchers", data={"plan_id": "heure", "count": "50", "csrf": token})
    assert r.text.count('class="ticket"') == 50 and len(r.content) <= 30 * 1024
    for bad in ({"plan_id": "nope", "count": "2"}, {"plan_id": "jour", "count": "0"}):
        r = c.post("/admin/vouchers", data={**bad, "csrf": token})
        assert r.status_code == 303 and "msg=bad_plan" in r.headers["location"]


def test_admin_logout_ends_the_session(hub: Hub) -> None:
    c, _ = _admin(hub, "gardien-2026")
    token = csrf_of(c.get("/admin").text)
    r = c.post("/admin/logout", data={"csrf": token})
    assert r.status_code == 303
    assert c.get("/admin").status_code == 401


def test_admin_login_attempts_are_locked_out(hub: Hub) -> None:
    for _ in range(hub.config.portal.login_attempts):
        assert _admin(hub, "guess")[1].status_code == 401
    _, r = _admin(hub, "gardien-2026")
    assert r.status_code == 429 and "relais_admin" not in r.headers.get("set-cookie", "")
    hub.clock.now += hub.config.portal.lockout_seconds
    assert _admin(hub, "gardien-2026")[1].status_code == 303


def test_admin_disabled_without_a_password_hash(tmp_path: Path) -> None:
    with running_hub(tmp_path, admin_password_hash=None) as hub:
        c = hub.client()
        r = c.get("/admin")
        assert r.status_code == 404 and "pas activé" in r.text
        r = c.post("/admin/login", data={"password": "", "csrf": csrf_of(c.get("/").text)})
        assert r.status_code == 404


def test_the_library_link_leads_somewhere(hub: Hub) -> None:
    c = hub.client()
    assert 'href="/content/"' in c.get("/").text
    r = c.get("/content/?lang=en")
    assert r.status_code == 200 and "Mairie de Démo" in r.text
    # Free of login: a captive device reaches the library too.
    assert hub.agent.sessions == {}


def test_a_reloaded_login_url_goes_back_to_the_splash(hub: Hub) -> None:
    r = hub.client().get("/login")
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_head_is_answered_like_get(hub: Hub) -> None:
    c = hub.client(DEV1, base_url=f"http://{PROBE_HOSTS['/generate_204']}")
    r = c.head("/generate_204")
    assert (r.status_code, r.headers["location"]) == (302, SPLASH)
    r = hub.client().head("/")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 1000
    # a foreign site's page is redirected to the splash for HEAD too, without a body
    r = hub.client(DEV1, base_url="http://example.org").head("/news")
    assert (r.status_code, r.headers["location"], r.content) == (302, SPLASH, b"")
