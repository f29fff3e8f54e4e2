"""The portal over HTTP: every route, each probe authorised and not, RFC 8908, languages,
errors, CSRF, the agent's wrong-code lock and the "un instant…" page. The portal talks over
the real UNIX socket and protocol to the real agent (handler, sessions, SQLite) behind a
recording kernel (tests/unit/real_agent.py); every code is one the agent issued or a
central one it verifies offline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest

from captive_portal.app import ADMIN_ATTEMPTS
from captive_portal.routes import login as login_route
from captive_portal.routes.probes import APPLE_SUCCESS, FIREFOX_CANONICAL
from hub_agent.api.protocol import Block, Disconnect
from hub_agent.sessions.vouchers import format_code, new_local_code
from tests.unit.real_agent import (
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
        yield h


@dataclass(frozen=True)
class Codes:
    heure: str
    jour: str


@pytest.fixture
def codes(hub: Hub) -> Codes:
    """One printed ticket of each plan, issued by the agent."""
    return Codes(hub.agent.issue("heure"), hub.agent.issue("jour"))


def _unissued() -> str:
    """A well-formed code (check symbol right) that nobody issued."""
    return format_code(new_local_code())


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


def test_code_prefilled_and_escaped(hub: Hub, codes: Codes) -> None:
    c = hub.client()
    assert f'value="{codes.heure}"' in c.get(f"/?code={codes.heure}").text
    page = c.get('/?code="><script>alert(1)</script>').text
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_pages_are_small_and_self_contained(hub: Hub, codes: Codes) -> None:
    c = hub.client()
    pages = [c.get("/").text, c.get("/?lang=en").text, login(c, codes.heure).text]
    pages.append(c.get("/status").text)
    for page in pages:
        assert len(page.encode()) <= 30 * 1024
        assert "<script" not in page.lower()
        assert not re.search(r'(src|href)="(https?:)?//', page), "external resource"
        assert "<style>" in page  # CSS inline


# --- login, status, logout, probes ---------------------------------------------------------
def test_voucher_login_flips_every_probe_and_logout_flips_back(hub: Hub, codes: Codes) -> None:
    c = hub.client()
    _assert_captive(hub)
    assert c.get("/status").status_code == 303
    r = login(c, codes.heure.lower().replace("-", " ") + " ")  # as typed on a phone
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
    session = hub.agent.session(MAC1)
    assert session is not None and session.ended_reason == "logout"
    assert hub.agent.kernel.calls == [("authorize", MAC1), ("deauthorize", MAC1)]


@pytest.mark.parametrize("reason", ["data_quota", "time_quota", "idle", "caretaker"])
def test_next_probe_redirects_after_the_session_ends(hub: Hub, codes: Codes, reason: str) -> None:
    # the 1-hour pass is cut at its data quota; the day pass (which throttles) otherwise
    code = codes.heure if reason == "data_quota" else codes.jour
    assert login(hub.client(), code).status_code == 200
    _assert_free(hub)
    if reason == "data_quota":
        hub.agent.use_bytes(MAC1, 300_000_000)
    elif reason == "time_quota":
        hub.clock.now += 24 * 3600
        hub.agent.tick()
    elif reason == "idle":
        hub.clock.now += 30 * 60
        hub.agent.tick()
    else:
        assert hub.agent.ask(Disconnect(mac=MAC1)).ok
    session = hub.agent.session(MAC1)
    assert session is not None and session.ended_reason == reason
    assert MAC1 not in hub.agent.kernel.grants
    _assert_captive(hub)
    assert hub.client().get("/status").status_code == 303


def test_throttled_session_is_still_through_and_says_so(hub: Hub, codes: Codes) -> None:
    c = hub.client()
    login(c, codes.jour)
    hub.agent.use_bytes(MAC1, 2_000_000_000)  # the day pass throttles instead of cutting
    assert hub.agent.kernel.grants[MAC1].down_kbit == 128
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
    # The allowance is the day's bytes: back after a logout with what is left of it ...
    c.post("/logout", data={"csrf": csrf_of(c.get("/status").text)})
    _assert_captive(hub)
    assert login(c, method="free", terms="1").status_code == 200
    # ... and not once it is used up, until tomorrow.
    hub.agent.use_bytes(MAC1, 100_000_000)
    _assert_captive(hub)
    r = login(c, method="free", terms="1")
    assert r.status_code == 400 and "accès gratuit du jour est épuisé" in r.text
    hub.clock.now += 24 * 3600
    assert login(c, method="free", terms="1").status_code == 200


@pytest.mark.parametrize(
    ("setup", "status", "fr", "en"),
    [
        ("none", 400, "Ce code n'existe pas", "This code does not exist"),
        ("typo", 400, "Ce code n'existe pas", "This code does not exist"),
        ("used_up", 400, "déjà entièrement utilisé", "already fully used"),
        ("expired", 400, "Ce ticket a expiré", "This voucher has expired"),
        ("revoked", 400, "a été annulé", "was cancelled"),
        ("blocked", 403, "a été bloqué", "has been blocked"),
        ("missing", 400, "Saisissez le code", "Enter the code"),
    ],
)
def test_login_errors_rerender_the_splash_localised_with_the_form_kept(
    hub: Hub, setup: str, status: int, fr: str, en: str
) -> None:
    a = hub.agent
    code = a.issue("heure")
    if setup == "none":
        code = _unissued()
    elif setup == "typo":  # one symbol wrong: the check symbol catches it
        code = code[:-1] + ("2" if code[-1] != "2" else "3")
    elif setup == "used_up":  # one device per 1-hour ticket
        assert login(hub.client(DEV2), code).status_code == 200
    elif setup == "expired":
        code = a.issue("heure", expires_at=hub.clock.now - 1)
    elif setup == "revoked":
        a.revoke(code)
    elif setup == "blocked":
        assert a.ask(Block(mac=MAC1, blocked=True)).ok
    elif setup == "missing":
        code = ""
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


def test_unknown_device_is_told_to_reconnect(hub: Hub, codes: Codes) -> None:
    r = login(hub.client("10.42.0.200"), codes.heure)
    assert r.status_code == 400 and "Reconnectez-vous au Wi-Fi" in r.text


# --- CSRF and the wrong-code lock ----------------------------------------------------------
def test_login_without_a_valid_csrf_token_is_refused(hub: Hub, codes: Codes) -> None:
    c = hub.client()
    forged = {"method": "voucher", "code": codes.heure}
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


def test_wrong_codes_lock_the_device_out_for_the_window(tmp_path: Path) -> None:
    # The agent counts wrong codes per device (MAC) in its database; a small limit here.
    with running_hub(tmp_path, login_attempts=5) as hub:
        right, other = hub.agent.issue("heure"), hub.agent.issue("jour")
        c = hub.client()
        pages = []
        for _ in range(4):
            r = login(c, _unissued())
            assert r.status_code == 400 and "Ce code n'existe pas" in unescape(r.text)
            pages.append(unescape(r.text))
        assert "essai(s)" not in pages[0]  # plenty left: no warning
        for left, page in zip((3, 2, 1), pages[1:4], strict=True):  # then before the lock
            assert f"Encore {left} essai(s) avant un blocage de 5 min." in page
        r = login(c, _unissued())  # the wrong code that locks: the page says so
        page = unescape(r.text)
        assert r.status_code == 429 and "Ce code n'existe pas" in page
        assert "Trop d'essais : cet appareil est bloqué pendant 5 min." in page
        assert "essai(s)" not in page and 0 < int(r.headers["retry-after"]) <= 300
        r = login(c, right)  # locked: even the right code waits for the window
        assert r.status_code == 429
        assert 0 < int(r.headers["retry-after"]) <= hub.config.portal.lockout_seconds
        assert "Trop d'essais. Réessayez dans 5 min." in unescape(r.text)
        assert f'value="{right}"' in r.text
        assert MAC1 not in hub.agent.kernel.grants
        assert login(hub.client(DEV2), other).status_code == 200  # others unaffected
        hub.clock.now += hub.config.portal.lockout_seconds
        assert login(c, right).status_code == 200
        assert MAC1 in hub.agent.kernel.grants


def test_a_right_code_after_wrong_ones_is_accepted(hub: Hub, codes: Codes) -> None:
    c = hub.client()
    for _ in range(3):
        assert login(c, _unissued()).status_code == 400
    r = login(c, codes.heure)
    assert r.status_code == 200 and "Vous êtes connecté" in r.text
    _assert_free(hub)


# --- an agent that answers late ------------------------------------------------------------
def test_a_login_answered_late_gets_the_waiting_page_then_the_status(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = hub.agent.issue("heure")
    c = hub.client()
    # The kernel change takes longer than the portal waits (short waits, not 8 s).
    release = hub.agent.kernel.hold()
    agent = hub.app.state.portal.agent
    monkeypatch.setattr(login_route, "LOGIN_TIMEOUT_S", 0.2)
    monkeypatch.setattr(agent, "timeout_s", 0.2)
    r = login(c, code)
    assert r.status_code == 200 and "Un instant" in r.text, r.text[-1500:]
    assert '<meta http-equiv="refresh" content="3;url=/login/wait?n=1&amp;lang=fr">' in r.text
    assert f'name="code" value="{code}"' in r.text  # "send the same code again"
    # Still busy: the page keeps waiting (the agent's worker is behind the login).
    r = c.get("/login/wait?n=1&lang=fr")
    assert r.status_code == 200 and "url=/login/wait?n=2" in r.text
    release.set()
    hub.agent.kernel.wait_granted(MAC1)
    monkeypatch.undo()  # the usual waits again: nothing below may be slow by accident
    r = c.get("/login/wait?n=2&lang=fr")
    assert r.status_code == 200 and "Vous êtes connecté" in r.text
    _assert_free(hub)
    # The same code again from the same device is the same login, not "already used".
    r = login(c, code)
    assert r.status_code == 200 and "Vous êtes connecté" in r.text
    assert hub.agent.kernel.calls.count(("authorize", MAC1)) == 2  # the same grant, again


# --- RFC 8908 ------------------------------------------------------------------------------
def test_captive_api_before_and_after_login(hub: Hub, codes: Codes) -> None:
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
    login(c, codes.heure)
    doc = c.get("/api/captive").json()
    assert doc["captive"] is False  # through, but nothing to buy here (no mobile money):
    assert doc["can-extend-session"] is False  # as the status page offers no "prolonger"
    assert 3500 < doc["seconds-remaining"] <= 3600
    assert doc["bytes-remaining"] == 300_000_000
    hub.agent.use_bytes(MAC1, 100_000_000)
    assert c.get("/api/captive").json()["bytes-remaining"] == 200_000_000


# --- fail closed, offline, foreign hosts --------------------------------------------------
def test_agent_down_fails_closed(tmp_path: Path) -> None:
    with running_hub(tmp_path, agent_up=False) as hub:
        code = hub.agent.issue("heure")
        c = hub.client()
        page = c.get("/").text
        assert "momentanément indisponible" in page
        # A silent agent may still be doing the login: "un instant…", never a yes.
        r = login(c, code)
        assert r.status_code == 200 and "Un instant" in r.text and "url=/login/wait" in r.text
        _assert_captive(hub)
        # When it stays silent, the waiting page gives up and says so.
        r = c.get(f"/login/wait?n={login_route.WAIT_ROUNDS}")
        assert r.status_code == 503 and "Personne ne peut se connecter" in r.text
        assert c.get("/api/captive").json()["captive"] is True
        assert c.get("/status").status_code == 303
        assert c.post("/logout", data={"csrf": csrf_of(page)}).status_code in (403, 503)
        assert hub.agent.calls == [] and hub.agent.kernel.calls == []


def test_offline_hub_keeps_vouchers_free_tier_and_library_working(hub: Hub) -> None:
    code = hub.agent.central("heure")  # sold by the centre: verified offline
    hub.agent.uplink_up = False
    c = hub.client()
    page = c.get("/").text
    assert "Internet est indisponible pour le moment" in page and 'href="/content/"' in page
    r = login(c, code)
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


def test_admin_login_cookie_and_dashboard(hub: Hub, codes: Codes) -> None:
    login(hub.client(DEV2), codes.heure)
    c, r = _admin(hub, "wrong")
    assert r.status_code == 401 and "Mot de passe incorrect" in r.text
    c, r = _admin(hub, "gardien-2026")
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    for attr in ("relais_admin=", "HttpOnly", "SameSite=strict", "Path=/admin"):
        assert attr.lower() in cookie.lower(), attr
    page = c.get("/admin").text
    assert MAC2 in page and "tecno-spark" in page and "Pass 1 heure" in page
    assert "Internet : OK" in page and "tout va bien (Processeur 13 %, 48,5 °C)" in page
    assert "1,23 Go sur 20 Go (42 éléments)" in page  # cache status
    assert "Version de configuration" not in page  # plain words, not version numbers
    assert "+228 90 00 00 00" in page  # the hub's contact, on every page
    assert "Pass journée" in page and "1 Go · 1 j 0 h · 4 Mbit/s" in page  # quotas
    assert len(page.encode()) <= 30 * 1024


def test_admin_actions_disconnect_block_unblock(hub: Hub, codes: Codes) -> None:
    user = hub.client(DEV2)
    login(user, codes.heure)
    _assert_free(hub, DEV2)
    c, _ = _admin(hub, "gardien-2026")
    token = csrf_of(c.get("/admin").text)
    r = c.post("/admin/disconnect", data={"mac": MAC2.upper(), "csrf": token})
    assert r.status_code == 303 and "msg=disconnected" in r.headers["location"]
    _assert_captive(hub, DEV2)
    assert "Appareil déconnecté" in c.get(r.headers["location"]).text
    r = c.post("/admin/block", data={"mac": MAC2, "blocked": "1", "csrf": token})
    assert "msg=blocked" in r.headers["location"]
    assert login(user, codes.heure).status_code == 403
    assert MAC2 not in hub.agent.kernel.grants
    r = c.post("/admin/block", data={"mac": MAC2, "blocked": "0", "csrf": token})
    assert "msg=unblocked" in r.headers["location"]
    assert login(user, codes.heure).status_code == 200  # the same ticket, same device
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
    # the agent's codes: 12 symbols (the CLI prints them XXXX-XXXX-XXXX)
    codes = re.findall(
        r"<b>([2-9A-HJKMNP-Z]{4}-?[2-9A-HJKMNP-Z]{4}-?[2-9A-HJKMNP-Z]{4})</b>", r.text
    )
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
    for _ in range(ADMIN_ATTEMPTS):  # the caretaker's password: a few guesses per address
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
    assert hub.agent.session(MAC1) is None and hub.agent.kernel.grants == {}


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
