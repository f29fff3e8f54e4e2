"""Rendering: pure formatting and page contexts, and the Jinja2 environment. No I/O here
beyond reading the template files once."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from captive_portal.agent import DeviceState
from captive_portal.i18n import Translator
from captive_portal.phone import contact_context, status_extras
from captive_portal.settings import Settings
from hub_agent.api.protocol import SessionView
from hub_agent.config import HubConfig, Localised
from hub_agent.sessions.states import THROTTLED

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MAX_PAGE_BYTES = 30 * 1024


# --- formatting --------------------------------------------------------------------------
def _num(value: float, t: Translator, digits: int = 1) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return text.replace(".", t("num.decimal"))


def fmt_bytes(n: int | None, t: Translator) -> str:
    if n is None:
        return t("unlimited")
    n = max(0, n)
    if n >= 1_000_000_000:
        return f"{_num(n / 1e9, t, 2)} {t('unit.gb')}"
    if n >= 1_000_000:
        return f"{_num(n / 1e6, t, 0 if n >= 100_000_000 else 1)} {t('unit.mb')}"
    return f"{_num(n / 1e3, t, 0)} {t('unit.kb')}"


def fmt_duration(seconds: int | None, t: Translator) -> str:
    if seconds is None:
        return t("unlimited")
    if seconds < 60:
        return t("duration.under_minute")
    minutes = seconds // 60
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    if days:
        return t("duration.days_hours", d=days, h=hours)
    if hours:
        return t("duration.hours_minutes", h=hours, m=f"{mins:02d}")
    return t("duration.minutes", m=mins)


def fmt_speed(kbit: int, t: Translator) -> str:
    if kbit >= 1000:
        return f"{_num(kbit / 1000, t)} {t('unit.mbits')}"
    return f"{kbit} {t('unit.kbits')}"


def localised(text: Localised, lang: str, default: str) -> str:
    return text.get(lang) or text.get(default) or next(iter(text.values()), "")


# --- page contexts -----------------------------------------------------------------------
@dataclass(frozen=True)
class Notice:
    kind: str  # "error" | "info" | "warn"
    text: str


def _lang_links(settings: Settings, t: Translator, path: str) -> list[dict[str, Any]]:
    cat = settings.languages.catalogue
    return [
        {
            "code": code,
            "label": cat[code].get("lang.name", code),
            "href": f"{path}?{urlencode({'lang': code})}",
            "current": code == t.lang,
        }
        for code in settings.languages.available
    ]


def common_context(settings: Settings, t: Translator, path: str, title: str) -> dict[str, Any]:
    """What every page's base template needs."""
    hub = settings.config.hub
    return {
        "lang": t.lang,
        "t": t,
        "title": title,
        "hub_name": hub.name,
        "kind_label": t(f"kind.{hub.kind}"),
        "lang_links": _lang_links(settings, t, path),
        "lang_q": f"?{urlencode({'lang': t.lang})}",
        "contact": contact_context(settings.config, t),
    }


def _banners(state: DeviceState | None, t: Translator) -> list[Notice]:
    if state is None:
        return []
    if not state.available or state.stale:
        return [Notice("warn", t("banner.unavailable"))]
    if state.offline:
        return [Notice("info", t("banner.offline"))]
    return []


def splash_key(state: DeviceState | None, t: Translator) -> tuple[object, ...]:
    """All ``splash_context`` reads from the device's state: devices equal in it get the
    same page but for the holes (captive_portal.splash_pages keeps one per key)."""
    return (state is not None and state.authorised, *_banners(state, t))


def plan_rows(config: HubConfig, t: Translator) -> list[dict[str, str]]:
    default = config.portal.default_language
    rows = []
    for p in config.plans:
        facts = [
            fmt_bytes(p.data_quota_mb * 1_000_000, t) if p.data_quota_mb else t("unlimited_data"),
            fmt_duration(p.time_quota_min * 60, t) if p.time_quota_min else t("unlimited_time"),
            fmt_speed(p.down_kbit, t),
        ]
        if p.devices_per_voucher > 1:
            facts.append(t("plan.devices", n=p.devices_per_voucher))
        rows.append(
            {
                "id": p.id,
                "name": localised(p.name, t.lang, default),
                "price": p.price_label,
                "facts": " · ".join(facts),
            }
        )
    return rows


def splash_context(
    settings: Settings,
    t: Translator,
    state: DeviceState | None,
    *,
    csrf: str,
    code: str = "",
    error: str | None = None,
    error_params: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    config = settings.config
    methods = config.portal.login_methods
    notices = _banners(state, t)
    if error:
        key = f"error.{error}"
        text = t(key, **(error_params or {}))
        notices.insert(0, Notice("error", text if text != key else t("error.generic")))
    terms = localised(config.portal.terms, t.lang, config.portal.default_language)
    free = config.free_tier
    return {
        **common_context(settings, t, "/", t("splash.title")),
        "notices": notices,
        "plans": plan_rows(config, t),
        "terms": terms or t("terms.default"),
        "voucher_enabled": "voucher" in methods,
        "account_enabled": "account" in methods,
        "free_enabled": "free" in methods and free.enabled,
        "free_facts": t(
            "free.facts",
            mb=fmt_bytes(free.daily_mb * 1_000_000, t),
            speed=fmt_speed(free.down_kbit, t),
        ),
        "code": code,
        "csrf": csrf,
        "authorised": state is not None and state.authorised,
    }


def session_facts(s: SessionView, t: Translator, default_lang: str) -> dict[str, str]:
    return {
        "plan": localised(s.plan_name, t.lang, default_lang) or s.plan_id,
        "data_left": fmt_bytes(s.bytes_remaining, t),
        "data_used": fmt_bytes(s.bytes_used, t),
        "time_left": fmt_duration(s.seconds_remaining, t),
        "speed": t("speed.down_up", down=fmt_speed(s.down_kbit, t), up=fmt_speed(s.up_kbit, t)),
        "throttled": "1" if s.state == THROTTLED else "",
    }


def status_context(
    settings: Settings,
    t: Translator,
    state: DeviceState,
    session: SessionView,
    *,
    csrf: str,
    just_logged_in: bool = False,
    now: float | None = None,
) -> dict[str, Any]:
    notices = _banners(state, t)
    if just_logged_in:
        notices.insert(0, Notice("ok", t("status.welcome")))
    if session.state == THROTTLED:
        notices.append(Notice("warn", t("status.throttled")))
    extras = status_extras(session, settings.config, t, time.time() if now is None else now)
    if extras["low"]:
        notices.append(Notice("warn", extras["low"]))
    return {
        "ends": extras["ends"],
        **common_context(settings, t, "/status", t("status.title")),
        "notices": notices,
        "s": session_facts(session, t, settings.config.portal.default_language),
        "csrf": csrf,
        "voucher_enabled": "voucher" in settings.config.portal.login_methods,
        # a central code's balance follows it: where else it was used, and whether the
        # centre could be asked (else the hub grants a bounded offline allowance)
        "elsewhere": [
            {"hub": u.hub, "used": fmt_bytes(u.bytes, t)} for u in session.used_elsewhere or []
        ],
        "balance_offline": session.balance_offline,
    }


def quota_rows(config: HubConfig, t: Translator) -> list[tuple[str, str]]:
    rows = [(r["name"], f"{r['facts']} — {r['price']}") for r in plan_rows(config, t)]
    f = config.free_tier
    if f.enabled:
        mb = fmt_bytes(f.daily_mb * 1_000_000, t)
        rows.append((t("free.title"), t("free.facts", mb=mb, speed=fmt_speed(f.down_kbit, t))))
    return rows


# --- the environment ---------------------------------------------------------------------
class Renderer:
    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        css = (templates_dir / "portal.css").read_text(encoding="utf-8")
        self.env.globals["css"] = Markup(" ".join(css.split()))

    def page(self, name: str, context: Mapping[str, Any]) -> str:
        return self.env.get_template(name).render(**context)
