"""The fleet table, pure: registry rows -> one row per hub, for the terminal and the web.

A hub is ``online`` when its last state says so and it was heard from recently,
``silent`` when it says online but nothing arrived for ``stale_after_s`` (a dead uplink
the broker has not noticed yet), ``offline`` after its will or a clean goodbye, and
``never`` before its first message.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("online", "silent", "offline", "never")
STALE_AFTER_S = 300.0


@dataclass(frozen=True)
class FleetRow:
    id: str
    kind: str
    name: str
    region: str | None
    lat: float | None
    lon: float | None
    status: str
    last_seen: float | None
    cpu: float | None
    disk: float | None
    clients: int | None
    data_today_mb: float | None
    desired_version: int
    reported_version: int | None
    config_status: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _num(health: dict[str, Any], *names: str) -> float | None:
    for n in names:
        v = health.get(n)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return None


def status_of(row: dict[str, Any], now: float, stale_after_s: float = STALE_AFTER_S) -> str:
    if row.get("last_seen") is None and row.get("state_ts") is None:
        return "never"
    if not row.get("online"):
        return "offline"
    if row.get("last_seen") is None or now - float(row["last_seen"]) > stale_after_s:
        return "silent"
    return "online"


def config_status(row: dict[str, Any]) -> str:
    desired = int(row.get("desired_version") or 0)
    reported = row.get("reported_version")
    status = row.get("reported_status")
    if reported is None or status is None:
        return "pending" if desired else "-"
    if int(reported) < desired:
        return "pending"
    return str(status)


def fleet_row(row: dict[str, Any], now: float, stale_after_s: float = STALE_AFTER_S) -> FleetRow:
    try:
        health = json.loads(row.get("last_health") or "{}")
    except ValueError:
        health = {}
    if not isinstance(health, dict):
        health = {}
    served = _num(health, "srv", "bytes_served_today")
    clients = _num(health, "dev", "devices_connected", "clients")
    return FleetRow(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        region=row.get("region"),
        lat=row.get("lat"),
        lon=row.get("lon"),
        status=status_of(row, now, stale_after_s),
        last_seen=row.get("last_seen"),
        cpu=_num(health, "cpu", "cpu_pct"),
        disk=_num(health, "dsk", "disk_pct"),
        clients=None if clients is None else int(clients),
        data_today_mb=None if served is None else round(served / 1e6, 1),
        desired_version=int(row.get("desired_version") or 0),
        reported_version=row.get("reported_version"),
        config_status=config_status(row),
    )


def fleet_rows(rows: list[dict[str, Any]], now: float | None = None) -> list[FleetRow]:
    t = time.time() if now is None else now
    return [fleet_row(r, t) for r in rows]


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    s = max(0, int(now - ts))
    if s < 90:
        return f"{s}s ago"
    if s < 5400:
        return f"{s // 60}m ago"
    if s < 172_800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def _fmt(v: float | int | None, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:g}{unit}"


COLUMNS = (
    "HUB",
    "KIND",
    "REGION",
    "STATE",
    "LAST SEEN",
    "CPU",
    "DISK",
    "CLIENTS",
    "DATA",
    "CONFIG",
)


def table_cells(r: FleetRow, now: float) -> tuple[str, ...]:
    cfg = f"v{r.reported_version or 0}/{r.desired_version} {r.config_status}"
    return (
        r.id,
        r.kind,
        r.region or "-",
        r.status,
        ago(r.last_seen, now),
        _fmt(r.cpu, "%"),
        _fmt(r.disk, "%"),
        _fmt(r.clients),
        _fmt(r.data_today_mb, " MB"),
        cfg,
    )


def render_table(rows: list[FleetRow], now: float) -> str:
    cells = [COLUMNS, *(table_cells(r, now) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"{len(rows)} hub(s): {summary or 'none'}")
    return "\n".join(lines)
