"""The portal's pure parts: language choice, lockout, CSRF tokens, password hashes,
formatting, translations and the RFC 8908 document."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest

from captive_portal.agent import DeviceState
from captive_portal.i18n import (
    I18N_DIR,
    Languages,
    TranslationError,
    choose_language,
    load_catalogue,
    parse_accept_language,
)
from captive_portal.ratelimit import Lockout
from captive_portal.render import fmt_bytes, fmt_duration, fmt_speed
from captive_portal.routes.captive_api import captive_document
from captive_portal.security import (
    CsrfSigner,
    hash_password,
    load_or_create_secret,
    parse_hash,
    verify_password,
)
from captive_portal.settings import SettingsError, build_settings
from captive_portal.state import AdminSessions, PortalState, StoredLockout
from hub_agent.api.protocol import DeviceView, SessionView
from hub_agent.config import validate_config
from tests.unit.real_agent import portal_config, tls_config_dict


def test_accept_language_ranking() -> None:
    assert parse_accept_language("fr-FR,fr;q=0.9,en;q=0.8") == ["fr", "fr", "en"]
    assert parse_accept_language("en;q=0.2, ee;q=0.9, *;q=0.1") == ["ee", "en", "*"]
    assert parse_accept_language("en;q=0, fr;q=bogus") == []
    assert choose_language(None, "ee, en;q=0.5", ("fr", "en"), "fr") == "en"
    assert choose_language("EN", "fr", ("fr", "en"), "fr") == "en"
    assert choose_language("xx", None, ("fr", "en"), "fr") == "fr"
    assert choose_language(None, "", ("fr", "en"), "fr") == "fr"


def test_translation_files_are_complete_and_placeholders_match() -> None:
    cat = load_catalogue()
    fields = {k: set(re.findall(r"{(\w+)}", v)) for k, v in cat["fr"].items()}
    for lang, texts in cat.items():
        assert set(texts) == set(cat["fr"]), lang
        for k, v in texts.items():
            assert set(re.findall(r"{(\w+)}", v)) == fields[k], (lang, k)
            list(string.Formatter().parse(v))  # raises on a stray brace


def test_adding_a_language_is_adding_a_file(tmp_path: Path) -> None:
    for f in I18N_DIR.glob("*.json"):
        (tmp_path / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    # Ewe, partial: the missing keys fall back to French.
    (tmp_path / "ee.json").write_text(json.dumps({"lang.name": "Eʋegbe"}), encoding="utf-8")
    langs = Languages.build(["fr", "en", "ee", "kbp"], "fr", load_catalogue(tmp_path))
    assert langs.available == ("fr", "en", "ee")  # kbp has no file yet: not offered
    t = langs.translator(langs.choose(None, "ee"))
    assert t.lang == "ee" and t("lang.name") == "Eʋegbe" and t("voucher.submit") == "Se connecter"
    (tmp_path / "Bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(TranslationError, match="ISO 639"):
        load_catalogue(tmp_path)


def test_lockout_window() -> None:
    now = [0.0]
    lock = Lockout(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(2):
        lock.fail("a")
    assert lock.retry_after("a") == 0
    lock.fail("a")
    assert lock.retry_after("a") == 60 and lock.retry_after("b") == 0
    now[0] = 30
    assert lock.retry_after("a") == 30
    now[0] = 60
    assert lock.retry_after("a") == 0
    lock.fail("a")
    lock.succeed("a")
    assert lock.retry_after("a") == 0


def test_lockout_memory_is_bounded() -> None:
    lock = Lockout(limit=1, window_s=60, clock=lambda: 0.0, max_keys=10)
    for i in range(100):
        lock.fail(f"10.0.0.{i}")
    assert len(lock._failures) <= 10
    assert lock.retry_after("10.0.0.99") == 60


def test_csrf_tokens_bound_to_purpose_binding_and_time() -> None:
    s = CsrfSigner(b"k" * 32, max_age_s=100)
    tok = s.issue("login", "10.42.0.101", now=1000)
    assert s.check(tok, "login", "10.42.0.101", now=1050)
    assert not s.check(tok, "login", "10.42.0.102", now=1050)
    assert not s.check(tok, "logout", "10.42.0.101", now=1050)
    assert not s.check(tok, "login", "10.42.0.101", now=1101)
    assert not CsrfSigner(b"j" * 32).check(tok, "login", "10.42.0.101", now=1050)
    for bad in ("", ".", "abc.def", "1000.", "99999999999999.aa"):
        assert not s.check(bad, "login", "10.42.0.101", now=1050)


def test_password_hash_round_trip() -> None:
    h = hash_password("s3cret", log2_n=10)
    assert h.startswith("scrypt$10$8$1$")
    assert verify_password("s3cret", h)
    assert not verify_password("s3cret ", h) and not verify_password("", h)
    assert hash_password("s3cret", log2_n=10) != h  # salted
    assert not verify_password("s3cret", "plain-text")
    assert parse_hash(hash_password("x")).log2_n == 14  # the default cost
    with pytest.raises(ValueError, match="password"):
        hash_password("")


def test_admin_sessions_expire_and_close() -> None:
    s = AdminSessions(PortalState(None), ttl_s=10, max_sessions=2)
    a = s.open(now=0)
    assert s.valid(a, now=5) and not s.valid(a, now=10) and not s.valid("x", now=0)
    b, c, d = s.open(now=20), s.open(now=21), s.open(now=22)
    assert not s.valid(b, now=22) and s.valid(c, now=22) and s.valid(d, now=22)
    s.close(c)
    assert not s.valid(c, now=22)


def test_caretaker_sessions_and_lockouts_survive_a_portal_restart(tmp_path: Path) -> None:
    db = tmp_path / "portal.db"
    sid = AdminSessions(PortalState(db)).open(now=100)
    now = [100.0]
    lock = StoredLockout(PortalState(db), 2, 300, lambda: now[0])
    lock.fail("10.42.0.7")
    lock.fail("10.42.0.7")
    assert lock.retry_after("10.42.0.7")
    # a new process: same file
    assert AdminSessions(PortalState(db)).valid(sid, now=200)
    again = StoredLockout(PortalState(db), 2, 300, lambda: now[0])
    assert again.retry_after("10.42.0.7") and not again.retry_after("10.42.0.8")
    assert (db.stat().st_mode & 0o777) == 0o600
    AdminSessions(PortalState(db)).close(sid)
    assert not AdminSessions(PortalState(db)).valid(sid, now=200)


def test_secret_file_created_private_and_reused(tmp_path: Path) -> None:
    f = tmp_path / "portal.key"
    key = load_or_create_secret(f)
    assert (f.stat().st_mode & 0o777) == 0o600 and load_or_create_secret(f) == key
    assert load_or_create_secret(None) != load_or_create_secret(None)
    f.write_text("short")
    with pytest.raises(ValueError, match="shorter"):
        load_or_create_secret(f)


def test_settings_refuse_a_bad_admin_hash_and_missing_tls_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"portal\.admin_password_hash"):
        build_settings(portal_config(tmp_path / "s", admin_password_hash="md5$abc"))
    cfg = portal_config(
        tmp_path / "s", tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem")
    )
    with pytest.raises(SettingsError, match=r"portal\.tls_cert"):
        build_settings(cfg)


def test_settings_urls_and_own_hosts(tmp_path: Path) -> None:
    data = tls_config_dict(tmp_path)
    st = build_settings(validate_config(data))
    assert st.base_url == "http://10.42.0.1:8080/"
    assert st.api_base_url == "https://10.42.0.1:8443/"
    for host in ("10.42.0.1", "10.42.0.1:8080", "10.42.0.1:80", "[fd42::1]:8080", None):
        assert st.is_own_host(host), host
    for host in ("example.com", "captive.apple.com", "10.42.0.2:8080", "10.42.0.1:9999"):
        assert not st.is_own_host(host), host
    data["portal"]["http_port"] = 80
    assert build_settings(validate_config(data)).base_url == "http://10.42.0.1/"


def test_formatting() -> None:
    t = Languages.build(["fr", "en"], "fr", load_catalogue()).translator
    fr, en = t("fr"), t("en")
    assert fmt_bytes(None, fr) == "illimité"
    assert fmt_bytes(300_000_000, fr) == "300 Mo" and fmt_bytes(1_234_500_000, en) == "1.23 GB"
    assert fmt_bytes(12_345_678, fr) == "12,3 Mo" and fmt_bytes(999, en) == "1 kB"
    assert fmt_duration(59, fr) == "moins d'une minute"
    assert fmt_duration(3599, fr) == "59 min" and fmt_duration(3600, fr) == "1 h 00"
    assert fmt_duration(3900, en) == "1 h 05 min" and fmt_duration(90000, en) == "1 d 1 h"
    assert fmt_speed(512, fr) == "512 kbit/s" and fmt_speed(1500, fr) == "1,5 Mbit/s"


def _session(state: str = "authorised") -> SessionView:
    return SessionView(
        state=state,
        plan_id="heure",
        plan_name={"fr": "Pass"},
        down_kbit=1,
        up_kbit=1,
        bytes_used=0,
        bytes_remaining=5,
        seconds_remaining=None,
        started_at=0,
    )


def test_captive_document_fails_closed(tmp_path: Path) -> None:
    st = build_settings(portal_config(tmp_path / "s"))
    dev = DeviceView(mac="02:00:00:00:00:01", ip="10.42.0.9", session=_session())
    doc = captive_document(st, DeviceState(True, dev, True))
    assert doc["captive"] is False and doc["bytes-remaining"] == 5
    assert "seconds-remaining" not in doc  # unlimited time: no field
    for state in (
        DeviceState(False, dev, True),  # agent silent
        DeviceState(True, dev.model_copy(update={"blocked": True}), True),
        DeviceState(True, dev.model_copy(update={"session": _session("expired")}), True),
        DeviceState(True, None, True),
    ):
        doc = captive_document(st, state)
        assert doc["captive"] is True and "bytes-remaining" not in doc
