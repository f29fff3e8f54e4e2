"""The fleet web pages: server-rendered HTML and inline SVG, no JavaScript, no external
resources; French first, English too (``?lang=`` or Accept-Language, as the portal).

Texts are JSON catalogues (``i18n/<lang>.json``, read with the portal's own loader: fr is
the reference, a missing key falls back to it); pages are Jinja2 templates
(``templates/``, autoescaped); the map and charts are SVG built here. The data comes from
``fleet_query`` (search, filters, sort and paging done by the database).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from functools import cache
from html import escape
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup

from captive_portal.dashboard import money, period_label
from captive_portal.i18n import Languages, Translator, load_catalogue
from hub_agent.sessions.vouchers import format_code
from provisioning.controller.fleet_query import (
    KINDS,
    PER_PAGE,
    FleetQuery,
    FleetView,
    PushRecord,
)
from provisioning.controller.fleet_sales import NETWORKS, RecentPayment, SalesView
from provisioning.fleet import STATUSES, FleetRow
from provisioning.geo import REGIONS, Projection

HERE = Path(__file__).resolve().parent
LANGS = ("fr", "en")
TZ = ZoneInfo("Africa/Lome")
COLOURS = {"online": "#2e9d4f", "silent": "#e0a100", "offline": "#c9352b", "never": "#8a8f98"}
CONFIG_COLOURS = {"applied": "#2e9d4f", "rejected": "#c9352b", "rolled_back": "#c9352b"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}
header{background:#14324f;color:#fff;padding:10px 18px;display:flex;align-items:center;
justify-content:space-between}header h1{margin:0;font-size:20px}
header a{color:#cfe3ff}main{display:flex;gap:18px;padding:16px;align-items:flex-start}
.map{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px;flex:none}
.note{font-size:12px;color:#55606e;max-width:300px}
.side{flex:1;min-width:0}.cards{display:flex;gap:10px;margin-bottom:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px 14px;
color:inherit;text-decoration:none}
.card b{font-size:22px;display:block}table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:4px 8px;border-bottom:1px solid #e3e6eb;text-align:left;white-space:nowrap}
th{background:#eef1f5;position:sticky;top:0}th a{color:inherit}
td.n{text-align:right}.dot{display:inline-block;width:10px;height:10px;border-radius:50%;
margin-right:5px;vertical-align:middle}.wrap{max-height:70vh;overflow:auto;
border:1px solid #d5d9e0;border-radius:6px}.charts{display:grid;
grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.chart{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px}
.chart h3{margin:0 0 4px;font-size:14px}section{padding:0 16px 16px}
.filters{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:end;background:#fff;
border:1px solid #d5d9e0;border-radius:6px;padding:8px 10px;margin-bottom:8px}
.filters label{display:flex;flex-direction:column;font-size:12px;color:#55606e}
.filters input[type=search]{width:16em}.count{margin:4px 0}.pages{display:flex;gap:16px;
margin:8px 0}.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px}
.facts dt{color:#55606e}.facts dd{margin:0}
"""


class Placed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def lat(self) -> float | None: ...
    @property
    def lon(self) -> float | None: ...
    @property
    def status(self) -> str: ...


@cache
def languages() -> Languages:
    return Languages.build(LANGS, "fr", load_catalogue(HERE / "i18n"))


def translator(lang: str) -> Translator:
    return languages().translator(lang if lang in languages().available else "fr")


def choose_lang(query: str | None, accept_language: str | None) -> str:
    return languages().choose(query, accept_language)


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def ago(ts: float | None, now: float, t: Translator) -> str:
    if ts is None:
        return t("ago.never")
    s = max(0, int(now - ts))
    if s < 90:
        return t("ago.s", n=s)
    if s < 5400:
        return t("ago.m", n=s // 60)
    if s < 172_800:
        return t("ago.h", n=s // 3600)
    return t("ago.d", n=s // 86400)


def when(ts: float | None, now: float, t: Translator) -> str:
    """Clock time in Lomé and how long ago: ``14/03 15:30 (il y a 3 h)``."""
    if ts is None:
        return "–"
    clock = time.strftime("%d/%m %H:%M", time.gmtime(ts))  # Africa/Lome is UTC all year
    return f"{clock} ({ago(ts, now, t)})"


def num(v: float | int | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


def _known(t: Translator, key: str) -> bool:
    return t(key) != key


# event fields said otherwise, or not worth a person's attention
_SKIP = {"hub_id", "seq", "ts", "type", "pid", "at", "action", "status", "source", "size"}


def event_words(type_: str, data: dict[str, Any], t: Translator) -> tuple[str, str]:
    """An event as a person reads it: ("Appareil connecté", "forfait jour · par ticket")."""
    title = t(f"ev.{type_}") if _known(t, f"ev.{type_}") else t("ev.unknown", type=type_)
    parts: list[str] = []
    for k, v in data.items():
        if k in _SKIP or isinstance(v, dict | list) or v is None:
            continue
        text = str(v)[:80]
        if k in ("plan", "plan_id"):
            parts.append(t("d.plan", v=text))
        elif k in ("method", "reason") and _known(t, f"d.{k}.{text}"):
            parts.append(t(f"d.{k}.{text}"))
        elif k == "device":
            parts.append(t("d.device", v=text[:8]))
        elif k == "code":
            parts.append(t("d.code", v=format_code(text) if len(text) == 12 else text))
        elif k in ("version", "item", "used_pct"):
            parts.append(t(f"d.{k}", v=text))
        elif k == "reason":
            parts.append(text)
        else:
            parts.append(f"{k} : {text}" if t.lang == "fr" else f"{k}: {text}")
    return title, " · ".join(parts)


def _render(name: str, t: Translator, **ctx: Any) -> str:
    return _env().get_template(name).render(t=t, css=Markup(_CSS), **ctx)


def map_svg(
    rows: Sequence[Placed], proj: Projection | None = None, t: Translator | None = None
) -> str:
    """Togo's outline with one dot per hub, coloured by state; each dot links to its hub."""
    p = proj or Projection()
    tr = t or translator("fr")
    label = tr("map_label")
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{p.width}' height='{p.height}' "
        f"viewBox='0 0 {p.width} {p.height}' role='img' aria-label='{escape(label)}'>",
        f"<path d='{p.outline_path()}' fill='#e8efe3' stroke='#4a6b3a' stroke-width='1.5'/>",
    ]
    east = p.xy(1.95, 0)[0]
    for region, (city, lon, lat) in REGIONS.items():
        x, y = p.xy(lon, lat)
        # label east of the border, a leader line to the capital
        parts.append(
            f"<rect x='{x - 2.5}' y='{y - 2.5}' width='5' height='5' fill='#14324f'/>"
            f"<line x1='{x}' y1='{y}' x2='{east - 2}' y2='{y}' stroke='#9aa5b1' "
            "stroke-dasharray='2,2'/>"
            f"<text x='{east}' y='{y + 4}' font-size='11' fill='#33404d'>{escape(city)}"
            f"<tspan x='{east}' dy='12' font-size='9' fill='#77818c'>{escape(region)}</tspan>"
            "</text>"
        )
    order = {s: i for i, s in enumerate(("online", "never", "silent", "offline"))}
    for r in sorted(rows, key=lambda r: order.get(r.status, 0)):  # problems drawn on top
        if r.lat is None or r.lon is None:
            continue
        x, y = p.xy(r.lon, r.lat)
        parts.append(
            f"<a href='/hubs/{escape(r.id)}'><circle cx='{x}' cy='{y}' r='4' "
            f"fill='{COLOURS.get(r.status, '#000')}' stroke='#fff' stroke-width='0.8'>"
            f"<title>{escape(r.name)} — {escape(tr('state.' + r.status))}</title></circle></a>"
        )
    for i, s in enumerate(STATUSES):  # south-west of the border (Ghana) is empty
        y = p.height - 70 + 15 * i
        parts.append(
            f"<circle cx='{p.pad + 4}' cy='{y}' r='4' fill='{COLOURS[s]}'/>"
            f"<text x='{p.pad + 12}' y='{y + 4}' font-size='11'>{escape(tr('state.' + s))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str,
    points: Sequence[tuple[float, float]],
    unit: str = "",
    width: int = 340,
    t: Translator | None = None,
) -> str:
    """A small time-series chart as inline SVG (polyline, min/max labels, time axis)."""
    h, pad_l, pad_b, pad_t = 120, 36, 18, 6
    tr = t or translator("fr")
    if not points:
        return f"<div class='chart'><h3>{escape(title)}</h3><p>{escape(tr('chart.none'))}</p></div>"
    t0, t1 = points[0][0], points[-1][0]
    vals = [v for _, v in points]
    lo, hi = min(0.0, min(vals)), max(vals)
    if hi == lo:
        hi = lo + 1
    span_t = (t1 - t0) or 1
    pw, ph = width - pad_l - 6, h - pad_b - pad_t

    def xy(t: float, v: float) -> str:
        return f"{pad_l + (t - t0) / span_t * pw:.1f},{pad_t + (1 - (v - lo) / (hi - lo)) * ph:.1f}"

    poly = " ".join(xy(t, v) for t, v in points)
    last = vals[-1]
    if span_t < 120:
        span = f"{span_t:.0f} s"
    elif span_t < 3 * 3600:
        span = f"{span_t / 60:.0f} min"
    else:
        span = f"{span_t / 3600:.0f} h"
    return (
        f"<div class='chart'><h3>{escape(title)}: {last:g}{escape(unit)}</h3>"
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{h}' "
        f"viewBox='0 0 {width} {h}'>"
        f"<line x1='{pad_l}' y1='{pad_t + ph}' x2='{width - 6}' y2='{pad_t + ph}' stroke='#bbb'/>"
        f"<line x1='{pad_l}' y1='{pad_t}' x2='{pad_l}' y2='{pad_t + ph}' stroke='#bbb'/>"
        f"<text x='2' y='{pad_t + 10}' font-size='10'>{hi:g}</text>"
        f"<text x='2' y='{pad_t + ph}' font-size='10'>{lo:g}</text>"
        f"<text x='{pad_l}' y='{h - 4}' font-size='10'>{escape(tr('chart.last', span=span))}</text>"
        f"<polyline fill='none' stroke='#1f6fb5' stroke-width='1.5' points='{poly}'/>"
        "</svg></div>"
    )


CHARTS = (("cpu", "%"), ("dsk", "%"), ("mem", "%"), ("dev", ""), ("lat", " ms"), ("loss", "%"))


def series(samples: Sequence[tuple[float, dict[str, Any]]], key: str) -> list[tuple[float, float]]:
    out = []
    for ts, data in samples:
        v = data.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append((ts, float(v)))
    return out


COLUMNS = (
    ("name", "col.hub"),
    ("kind", "col.kind"),
    ("region", "col.region"),
    ("state", "col.state"),
    ("seen", "col.seen"),
    ("", "col.cpu"),
    ("", "col.disk"),
    ("", "col.clients"),
    ("", "col.data"),
    ("config", "col.config"),
)


def fleet_page(
    view: FleetView,
    now: float,
    findings: Sequence[Any] = (),
    lang: str = "fr",
    sales: SalesView | None = None,
) -> str:
    t = translator(lang)
    q = view.query
    other = t("lang_other")
    return _render(
        "fleet.html",
        t,
        title=t("title"),
        refresh_s=60,
        lang_link=q.params() + ("&" if q.params() else "") + f"lang={other}",
        view=view,
        q=q,
        findings=findings,
        map=Markup(map_svg(view.points, t=t)),
        statuses=STATUSES,
        kinds=KINDS,
        per_page=PER_PAGE,
        columns=COLUMNS,
        colours=COLOURS,
        config_colours=CONFIG_COLOURS,
        hub_qs="" if lang == "fr" else f"?lang={lang}",
        ago=lambda ts: ago(ts, now, t),
        num=num,
        fmt_code=format_code,
        sales=sales,
        networks=NETWORKS,
        fcfa=lambda n: money(n, "FCFA"),
        day=lambda d: period_label(d, t),
    )


def hub_page(
    row: FleetRow,
    samples: Sequence[tuple[float, dict[str, Any]]],
    events: Sequence[dict[str, Any]],
    gaps: Sequence[tuple[int, int]],
    now: float,
    pushes: Sequence[PushRecord] = (),
    hub: dict[str, Any] | None = None,
    lang: str = "fr",
    payments: Sequence[RecentPayment] = (),
) -> str:
    """One hub: state, desired vs running config, push history, health charts, events,
    its recent mobile-money payments."""
    t = translator(lang)
    hub = hub or {}
    charts = "".join(line_chart(t(f"chart.{k}"), series(samples, k), u, t=t) for k, u in CHARTS)
    words = []
    for e in events:
        try:
            data = json.loads(e["data"])
        except (ValueError, TypeError):
            data = {}
        title, detail = event_words(str(e["type"]), data if isinstance(data, dict) else {}, t)
        words.append({"seq": e["seq"], "ts": e["ts"], "title": title, "detail": detail})
    reported = row.reported_version or 0

    def push_outcome(version: int) -> str:
        if version == reported and hub.get("reported_status"):
            return t(f"config.{hub['reported_status']}")
        if version > reported:
            return t("config.pending") if version == row.desired_version else "–"
        return "–"

    other = t("lang_other")
    when_t: Callable[[float | None], str] = lambda ts: when(ts, now, t)  # noqa: E731
    return _render(
        "hub.html",
        t,
        title=t("hub_title", name=row.name, id=row.id),
        refresh_s=0,
        lang_link=f"lang={other}",
        back_qs="" if lang == "fr" else f"?lang={lang}",
        row=row,
        agent_version=hub.get("agent_version"),
        reason=hub.get("reported_reason") or "",
        reported_ts=hub.get("reported_ts"),
        behind=row.desired_version - reported,
        gaps=", ".join(f"{a}–{b}" for a, b in gaps[:20]),
        charts=Markup(charts),
        pushes=pushes,
        push_outcome=push_outcome,
        events=words,
        colours=COLOURS,
        config_colours=CONFIG_COLOURS,
        ago=lambda ts: ago(ts, now, t),
        when=when_t,
        payments=payments,
        fcfa=lambda n: money(n, "FCFA"),
    )


def fleet_query_from(params: dict[str, list[str]]) -> FleetQuery:
    return FleetQuery.from_params(params)
