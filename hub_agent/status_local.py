"""``hub-agent status``: the clients, quotas and library cache, read from the hub database.

Read-only (``mode=ro``) and usable whether the agent runs or not; a table that does not
exist yet (the agent never ran here) reads as empty, not as an error.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hub_agent.config import HubConfig

SEEN_RECENTLY_S = 600  # "on the LAN now": seen by discovery in the last 10 minutes


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


def quotas(cfg: HubConfig) -> list[dict[str, Any]]:
    """What each plan promises (and the free tier), as the caretaker sells it."""
    out: list[dict[str, Any]] = [
        {
            "plan": p.id,
            "price": p.price_label,
            "data_mb": p.data_quota_mb,
            "time_min": p.time_quota_min,
            "down_kbit": p.down_kbit,
            "devices": p.devices_per_voucher,
        }
        for p in cfg.plans
    ]
    f = cfg.free_tier
    if f.enabled:
        out.append({"plan": "free", "price": "", "data_mb": f.daily_mb, "time_min": None,
                    "down_kbit": f.down_kbit, "devices": 1})  # fmt: skip
    return out


def local_sections(cfg: HubConfig, db_file: Path, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "clients": {"seen_recently": 0, "sessions": []},
        "quotas": quotas(cfg),
        "cache": {
            "items_ready": 0,
            "items": len(cfg.content.items),
            "used_bytes": 0,
            "budget_mb": cfg.content.budget_mb,
        },
    }
    if not db_file.exists():
        return out
    try:
        conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error as e:
        return {**out, "error": str(e)}
    limits = {q["plan"]: q["data_mb"] for q in out["quotas"]}
    try:
        seen = _rows(
            conn, "SELECT count(*) FROM devices WHERE last_seen >= ?", (now - SEEN_RECENTLY_S,)
        )
        names = dict(_rows(conn, "SELECT mac, name FROM device_names"))
        hosts = dict(_rows(conn, "SELECT mac, hostname FROM devices"))
        sessions = []
        for mac, plan, state, used in _rows(
            conn,
            "SELECT mac, plan_id, state, bytes_up + bytes_down FROM sessions "
            "WHERE state != 'ended' ORDER BY mac",
        ):
            mb = limits.get(plan)
            sessions.append({
                "mac": mac, "name": names.get(mac) or hosts.get(mac), "plan": plan,
                "state": state, "used_bytes": used,
                "quota_bytes": None if mb is None else mb * 1_000_000,
            })  # fmt: skip
        out["clients"] = {"seen_recently": int(seen[0][0]) if seen else 0, "sessions": sessions}
        ready = _rows(
            conn, "SELECT count(*), coalesce(sum(size + site_bytes), 0) FROM content_state "
            "WHERE state = 'ready'",
        )  # fmt: skip
        if ready:
            out["cache"]["items_ready"], out["cache"]["used_bytes"] = (
                int(ready[0][0]),
                int(ready[0][1]),
            )
    except sqlite3.Error as e:
        out["error"] = str(e)
    finally:
        conn.close()
    return out


def _mb(n: int | None) -> str:
    return "unlimited" if n is None else f"{n / 1_000_000:.0f} MB"


def render_lines(st: dict[str, Any]) -> list[str]:
    """The status text's lines for these sections."""
    c, cache = st["clients"], st["cache"]
    lines = [
        f"clients       {c['seen_recently']} on the LAN (last 10 min), "
        f"{len(c['sessions'])} logged in"
    ]
    for s in c["sessions"]:
        who = f"{s['name']} ({s['mac']})" if s["name"] else s["mac"]
        lines.append(
            f"  {who}: {s['plan']} {s['state']}, {_mb(s['used_bytes'])} of {_mb(s['quota_bytes'])}"
        )
    for q in st["quotas"]:
        time_ = f"{q['time_min']} min" if q["time_min"] else "no time limit"
        data = f"{q['data_mb']} MB" if q["data_mb"] else "unlimited data"
        price = f", {q['price']}" if q["price"] else ""
        per = " a day" if q["plan"] == "free" else ""
        lines.append(
            f"quota         {q['plan']}: {data}{per}, {time_}, {q['down_kbit']} kbit/s{price}"
        )
    lines.append(
        f"cache         {cache['items_ready']}/{cache['items']} items ready, "
        f"{cache['used_bytes'] / 1_000_000:.0f} MB of {cache['budget_mb']} MB"
    )
    if st.get("error"):
        lines.append(f"database      unreadable: {st['error']}")
    return lines
