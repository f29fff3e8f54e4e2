"""The caretaker's dashboard, as words and small pictures: pure functions over what the
agent answered (devices, health, ``CaretakerView``) and the config. No I/O.

The caretaker is a teacher or a clerk: devices by name, money by day, the Internet in a
sentence ("coupé depuis 10 min, appelez le ..."), today's traffic as a 24-bar inline SVG
(no JavaScript, ~1.5 KB). The hub itself is never listed: its own LAN MAC (from the
agent) and its own addresses (from the config) are filtered out here as well.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from markupsafe import Markup, escape

from captive_portal.i18n import Translator
from captive_portal.render import _num, fmt_bytes, session_facts
from hub_agent.api.protocol import CaretakerView, DeviceView, HealthView, SalesRow
from hub_agent.config import HubConfig
from hub_agent.lan_devices import hub_addresses
from hub_agent.sessions.states import LIVE

MAX_DEVICES = 60  # the page stays under 30 KB on a busy day; older devices are counted
HOT_C = 75.0
DISK_FULL_PCT = 90.0


def ago(seconds: float | None, t: Translator) -> str:
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 90:
        return t("ago.now")
    if s < 5400:
        return t("ago.minutes", n=round(s / 60))
    if s < 172_800:
        return t("ago.hours", n=round(s / 3600))
    return t("ago.days", n=s // 86_400)


def since(seconds: float, t: Translator) -> str:
    """A duration in plain words: "10 min", "2 h 05", "3 j"."""
    m = max(1, int(seconds) // 60)
    if m < 60:
        return t("since.minutes", n=m)
    if m < 2880:
        return t("since.hours", h=m // 60, m=f"{m % 60:02d}")
    return t("since.days", n=m // 1440)


def _visible(
    devices: Iterable[DeviceView], hub_macs: frozenset[str], own_ips: frozenset[str]
) -> list[DeviceView]:
    return [d for d in devices if d.mac not in hub_macs and (d.ip or "") not in own_ips]


def device_rows(
    devices: Iterable[DeviceView],
    view: CaretakerView | None,
    config: HubConfig,
    t: Translator,
    now: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(devices to show, blocked devices, how many older ones were left out)."""
    names = view.names if view else {}
    hub_macs = frozenset(view.hub_macs) if view else frozenset()
    staff_names = {d.mac: d.name for d in config.staff.devices if d.name}
    default = config.portal.default_language
    rows: list[dict[str, Any]] = []
    blocked: list[dict[str, Any]] = []
    for d in _visible(devices, hub_macs, hub_addresses(config)):
        s = d.session
        active = s is not None and s.state in LIVE
        facts = session_facts(s, t, default) if s is not None else None
        given = names.get(d.mac) or staff_names.get(d.mac)
        row = {
            "mac": d.mac,
            "name": given or d.hostname or t("admin.unnamed"),
            "hostname": d.hostname if given and d.hostname and d.hostname != given else None,
            "ip": d.ip or "—",
            "seen": ago(None if d.last_seen is None else now - d.last_seen, t),
            "last_seen": d.last_seen or 0.0,
            "plan": facts["plan"] if facts else "—",
            "state": t(f"state.{s.state}") if s else "—",
            "used": facts["data_used"] if facts else "—",
            "data_left": facts["data_left"] if facts and active else "—",
            "time_left": facts["time_left"] if facts and active else "—",
            "blocked": d.blocked,
            "staff": d.staff,
            "active": active,
        }
        (blocked if d.blocked else rows).append(row)
    rows.sort(key=lambda r: (not r["active"], -r["last_seen"], r["name"]))
    return rows[:MAX_DEVICES], blocked, max(0, len(rows) - MAX_DEVICES)


def internet_line(
    health: HealthView | None,
    view: CaretakerView | None,
    config: HubConfig,
    t: Translator,
) -> tuple[str, bool]:
    """("Internet : OK", True) or ("Internet : coupé depuis 10 min — appelez le ...", False)."""
    if health is None:
        return t("internet.unknown"), False
    if health.uplink_up:
        return t("internet.ok"), True
    down = view.uplink_down_since if view else None
    text = t("internet.down")
    if down is not None and view is not None:
        text = t("internet.down_since", d=since(view.now - down, t))
    contact = config.hub.contact
    support = contact.support_phone if contact else None
    call = t("internet.call", phone=support) if support else t("internet.call_centre")
    return f"{text} — {call}", False


def health_rows(h: HealthView, t: Translator, config: HubConfig) -> list[tuple[str, str]]:
    """The box, the disk, the centre and the library in plain words; no version numbers."""
    hot = h.temperature_c is not None and h.temperature_c >= HOT_C
    busy = h.cpu_pct >= 90 or h.mem_pct >= 90
    temp = f", {_num(h.temperature_c, t)} °C" if h.temperature_c is not None else ""
    box = t("health.box_hot") if hot else t("health.box_busy") if busy else t("health.box_ok")
    box += f" ({t('health.cpu')} {_num(h.cpu_pct, t, 0)} %{temp})"
    disk = t("health.disk_full" if h.disk_pct >= DISK_FULL_PCT else "health.disk_ok",
             pct=_num(h.disk_pct, t, 0))  # fmt: skip
    centre = t("health.centre_ok") if h.broker_connected else t("health.centre_down")
    cache = t(
        "health.cache_value",
        used=fmt_bytes(int(h.cache_used_mb * 1_000_000), t),
        budget=fmt_bytes(config.content.budget_mb * 1_000_000, t),
        items=h.cache_items,
    )
    return [
        (t("health.box"), box),
        (t("health.disk"), disk),
        (t("health.broker"), centre),
        (t("health.cache"), cache),
    ]


def period_label(p: str, t: Translator) -> str:
    if len(p) == 10:  # a day: "sam. 14/03"
        d = date.fromisoformat(p)
        return f"{t(f'weekday.{d.weekday()}')} {d.day:02d}/{d.month:02d}"
    return t(f"month.{int(p[5:7])}") + f" {p[:4]}"


def money(n: int, currency: str) -> str:
    text = f"{n:,}".replace(",", "\u202f")  # thin no-break space: 12 500 FCFA
    return f"{text} {currency}".strip()


def sales_rows(rows: list[SalesRow], currency: str, t: Translator) -> list[dict[str, str]]:
    return [
        {
            "period": period_label(r.period, t),
            "issued": str(r.issued),
            "issued_value": money(r.issued_value, currency),
            "used": str(r.used),
            "used_value": money(r.used_value, currency),
            "mobile": str(r.mobile),
            "mobile_value": money(r.mobile_value, currency or "FCFA"),
        }
        for r in rows
    ]


def peak_hours(hours: list[int], n: int = 2) -> list[int]:
    """The busiest hours of the day (ties: the earlier), only hours with traffic."""
    ranked = sorted((h for h in range(len(hours)) if hours[h] > 0), key=lambda h: (-hours[h], h))
    return sorted(ranked[:n])


def usage_chart(hours: list[int], t: Translator) -> Markup:
    """24 bars (local hours) as inline SVG; the peak hours darker. Scales to the page."""
    top = max(hours) if hours and max(hours) > 0 else 1
    peaks = set(peak_hours(hours))
    w, h, base = 240, 70, 58
    bars = []
    for i, v in enumerate(hours):
        bh = round(50 * v / top) if v else 0
        cls = "pk" if i in peaks else "b"
        bars.append(
            f'<rect class="{cls}" x="{i * 10 + 1}" y="{base - bh}" width="8" height="{bh}"/>'
        )
    ticks = "".join(f'<text x="{i * 10 + 5}" y="{h - 1}">{i}h</text>' for i in (0, 6, 12, 18, 23))
    label = escape(t("chart.label", total=fmt_bytes(sum(hours), t)))
    return Markup(
        f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">'
        f'<line x1="0" y1="{base}" x2="{w}" y2="{base}"/>{"".join(bars)}{ticks}</svg>'
    )


def chart_context(view: CaretakerView | None, t: Translator) -> dict[str, Any] | None:
    if view is None:
        return None
    hours = view.hours_today
    peaks = peak_hours(hours)
    return {
        "svg": usage_chart(hours, t),
        "total": fmt_bytes(sum(hours), t),
        "peaks": ", ".join(t("chart.hour", a=p, b=(p + 1) % 24) for p in peaks) or "—",
    }
