"""The fleet web pages, rendered as plain HTML + inline SVG (pure; no external resources).

The content needs no JavaScript: the map, the table and the charts are server-rendered.
A few lines of inline JS only make the table sortable by clicking a column header.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from hub_agent.sessions.vouchers import format_code
from provisioning.fleet import STATUSES, FleetRow, ago
from provisioning.geo import REGIONS, Projection

COLOURS = {"online": "#2e9d4f", "silent": "#e0a100", "offline": "#c9352b", "never": "#8a8f98"}
CONFIG_COLOURS = {"applied": "#2e9d4f", "rejected": "#c9352b", "rolled_back": "#c9352b"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}
header{background:#14324f;color:#fff;padding:10px 18px}header h1{margin:0;font-size:20px}
header a{color:#cfe3ff}main{display:flex;gap:18px;padding:16px;align-items:flex-start}
.map{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px;flex:none}
.side{flex:1;min-width:0}.cards{display:flex;gap:10px;margin-bottom:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px 14px}
.card b{font-size:22px;display:block}table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:4px 8px;border-bottom:1px solid #e3e6eb;text-align:left;white-space:nowrap}
th{background:#eef1f5;cursor:pointer;user-select:none;position:sticky;top:0}
td.n{text-align:right}.dot{display:inline-block;width:10px;height:10px;border-radius:50%;
margin-right:5px;vertical-align:middle}.wrap{max-height:80vh;overflow:auto;
border:1px solid #d5d9e0;border-radius:6px}.charts{display:grid;
grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.chart{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px}
.chart h3{margin:0 0 4px;font-size:14px}section{padding:0 16px 16px}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th,i){
 th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],
 rows=Array.from(b.rows),asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
 rows.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,
 c=y.cells[i].dataset.v||y.cells[i].textContent,na=parseFloat(a),nc=parseFloat(c);
 var r=(!isNaN(na)&&!isNaN(nc))?na-nc:a.localeCompare(c);return asc?r:-r;});
 rows.forEach(function(r){b.appendChild(r);});});});
"""


def _page(title: str, body: str, script: str = "", refresh_s: int = 0) -> str:
    js = f"<script>{script}</script>" if script else ""
    refresh = f"<meta http-equiv='refresh' content='{refresh_s}'>" if refresh_s else ""
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{refresh}"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1></header>{body}{js}</body></html>"
    )


def map_svg(rows: Sequence[FleetRow], proj: Projection | None = None) -> str:
    """Togo's outline with one dot per hub, coloured by state; each dot links to its hub."""
    p = proj or Projection()
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{p.width}' height='{p.height}' "
        f"viewBox='0 0 {p.width} {p.height}' role='img' aria-label='Map of Togo with hubs'>",
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
            f"<title>{escape(r.name)} — {r.status}</title></circle></a>"
        )
    for i, s in enumerate(STATUSES):  # south-west of the border (Ghana) is empty
        y = p.height - 70 + 15 * i
        parts.append(
            f"<circle cx='{p.pad + 4}' cy='{y}' r='4' fill='{COLOURS[s]}'/>"
            f"<text x='{p.pad + 12}' y='{y + 4}' font-size='11'>{s}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _num(v: float | int | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


def fleet_table(rows: Sequence[FleetRow], now: float) -> str:
    head = (
        "Hub",
        "Kind",
        "Region",
        "State",
        "Last seen",
        "CPU",
        "Disk",
        "Clients",
        "Data today",
        "Config",
    )
    out = ["<table class='sortable' id='fleet'><thead><tr>"]
    out += [f"<th>{h}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        cfg_colour = CONFIG_COLOURS.get(r.config_status, "#55606e")
        seen = -1 if r.last_seen is None else r.last_seen
        out.append(
            "<tr>"
            f"<td data-v='{escape(r.id)}'><a href='/hubs/{escape(r.id)}'>{escape(r.name)}</a>"
            f"<br><small>{escape(r.id)}</small></td>"
            f"<td>{escape(r.kind)}</td><td>{escape(r.region or '–')}</td>"
            f"<td data-v='{r.status}'><span class='dot' style='background:"
            f"{COLOURS.get(r.status, '#000')}'></span>{r.status}</td>"
            f"<td data-v='{seen}'>{ago(r.last_seen, now)}</td>"
            f"<td class='n'>{_num(r.cpu, '%')}</td><td class='n'>{_num(r.disk, '%')}</td>"
            f"<td class='n'>{_num(r.clients)}</td>"
            f"<td class='n'>{_num(r.data_today_mb, ' MB')}</td>"
            f"<td data-v='{r.reported_version or 0}' style='color:{cfg_colour}'>"
            f"v{r.reported_version or 0}/{r.desired_version} {escape(r.config_status)}</td>"
            "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def findings_table(findings: Sequence[Any]) -> str:
    """Voucher codes redeemed beyond their devices or never issued (provisioning.vouchers)."""
    if not findings:
        return ""
    body = "".join(
        f"<tr><td>{escape(f.kind)}</td><td>{escape(format_code(f.code))}</td>"
        f"<td>{escape(f.plan_id)}</td>"
        f"<td>{len({m for _, m, _ in f.redemptions})} / {f.devices_max}</td>"
        f"<td>{escape(', '.join(f.hubs))}</td></tr>"
        for f in findings
    )
    return (
        "<h2>Voucher findings</h2><table><thead><tr><th>finding</th><th>code</th>"
        "<th>plan</th><th>devices / allowed</th><th>hubs</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def fleet_page(rows: Sequence[FleetRow], now: float, findings: Sequence[Any] = ()) -> str:
    counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
    cards = "".join(
        f"<div class='card' style='border-left:5px solid {COLOURS[s]}'><b>{n}</b>{s}</div>"
        for s, n in counts.items()
    )
    rejected = sum(1 for r in rows if r.config_status in ("rejected", "rolled_back"))
    cards += f"<div class='card'><b>{len(rows)}</b>hubs</div>"
    cards += f"<div class='card'><b>{rejected}</b>config rejected</div>"
    cards += f"<div class='card'><b>{len(findings)}</b>voucher findings</div>"
    body = (
        f"<main><div class='map'>{map_svg(rows)}</div><div class='side'>"
        f"<div class='cards'>{cards}</div><div class='wrap'>{fleet_table(rows, now)}</div>"
        f"{findings_table(findings)}</div></main>"
    )
    return _page("Relais — fleet", body, _SORT_JS, refresh_s=30)


def line_chart(
    title: str, points: Sequence[tuple[float, float]], unit: str = "", width: int = 340
) -> str:
    """A small time-series chart as inline SVG (polyline, min/max labels, time axis)."""
    h, pad_l, pad_b, pad_t = 120, 36, 18, 6
    if not points:
        return f"<div class='chart'><h3>{escape(title)}</h3><p>no data</p></div>"
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
        f"<text x='{pad_l}' y='{h - 4}' font-size='10'>last {span}</text>"
        f"<polyline fill='none' stroke='#1f6fb5' stroke-width='1.5' points='{poly}'/>"
        "</svg></div>"
    )


CHARTS = (
    ("CPU", "cpu", "%"),
    ("Disk used", "dsk", "%"),
    ("Memory", "mem", "%"),
    ("Devices connected", "dev", ""),
    ("Uplink latency", "lat", " ms"),
    ("Uplink loss", "loss", "%"),
)


def series(samples: Sequence[tuple[float, dict[str, Any]]], key: str) -> list[tuple[float, float]]:
    out = []
    for ts, data in samples:
        v = data.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append((ts, float(v)))
    return out


def hub_page(
    row: FleetRow,
    samples: Sequence[tuple[float, dict[str, Any]]],
    events: Sequence[dict[str, Any]],
    gaps: Sequence[tuple[int, int]],
    now: float,
) -> str:
    charts = "".join(line_chart(t, series(samples, k), u) for t, k, u in CHARTS)
    ev_rows = []
    for e in events:
        try:
            extra = {
                k: v
                for k, v in json.loads(e["data"]).items()
                if k not in ("hub_id", "seq", "ts", "type")
            }
        except (ValueError, AttributeError):
            extra = {}
        ev_rows.append(
            f"<tr><td>{e['seq']}</td><td>{ago(e['ts'], now)}</td><td>{escape(e['type'])}</td>"
            f"<td>{escape(json.dumps(extra, ensure_ascii=False)[:200])}</td></tr>"
        )
    gap_text = ", ".join(f"{a}–{b}" for a, b in gaps[:20]) or "none"
    body = (
        "<section><p><a href='/'>← fleet</a></p>"
        f"<p><span class='dot' style='background:{COLOURS.get(row.status, '#000')}'></span>"
        f"<b>{row.status}</b> · last seen {ago(row.last_seen, now)} · {escape(row.kind)} · "
        f"{escape(row.region or '–')} · config v{row.reported_version or 0}/"
        f"{row.desired_version} {escape(row.config_status)}</p>"
        f"<p>Missing health samples (seq): {escape(gap_text)}</p>"
        f"<div class='charts'>{charts}</div>"
        "<h2>Recent events</h2><table class='sortable'><thead><tr><th>seq</th><th>when</th>"
        f"<th>type</th><th>details</th></tr></thead><tbody>{''.join(ev_rows)}</tbody></table>"
        "</section>"
    )
    return _page(f"{row.name} ({row.id})", body, _SORT_JS)
