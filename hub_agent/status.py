"""``hub-agent status [--json]``: what the caretaker (or a script) needs to know at the hub.

Read-only and usable while the agent runs or not: the running agent's status file
(broker connection, session, uplink probe), the outbox in the hub database (depth, oldest
queued sample) and the config store (version running, last result). Nothing here talks
to the broker, so it answers at once even with the uplink down.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from hub_agent.children import pid_alive
from hub_agent.config import ConfigError, HubConfig, load_config
from hub_agent.configsync import ConfigStore
from hub_agent.status_local import local_sections, render_lines
from hub_agent.telemetry import db_path
from hub_agent.telemetry.files import read_json
from hub_agent.telemetry.service import STATUS_EVERY_S, status_path

STALE_AFTER_S = max(10.0, 3 * STATUS_EVERY_S)


def _outbox(db_file: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"health": 0, "event": 0, "oldest_queued_ts": None}
    if not db_file.exists():
        return out
    try:
        conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error as e:
        return {**out, "health": None, "event": None, "error": str(e)}
    try:
        for kind, n in conn.execute("SELECT kind, count(*) FROM outbox GROUP BY kind"):
            out[str(kind)] = int(n)
        row = conn.execute("SELECT min(ts) FROM outbox WHERE kind = 'health'").fetchone()
        out["oldest_queued_ts"] = None if row is None or row[0] is None else float(row[0])
    except sqlite3.Error as e:
        if "no such table" not in str(e):  # no table: the agent never ran here, 0 is right
            out = {**out, "health": None, "event": None, "error": str(e)}
    finally:
        conn.close()
    return out


def gather_status(cfg: HubConfig, now: float | None = None) -> dict[str, Any]:
    """The status as data (the CLI prints it; other parts may add their sections)."""
    now = time.time() if now is None else now
    live = read_json(status_path(cfg.data_dir))
    live = live if isinstance(live, dict) else {}
    running = (
        bool(live)
        and now - float(live.get("updated", 0)) < max(STALE_AFTER_S, 3 * live.get("interval_s", 0))
        and pid_alive(live.get("pid"))
    )
    store = ConfigStore(cfg.data_dir)
    active = store.active()
    return {
        "hub_id": cfg.hub.id,
        "agent_running": running,
        "broker": {
            "address": f"{cfg.mqtt.host}:{cfg.mqtt.port}",
            "tls": cfg.mqtt.tls,
            "connected": bool(live.get("connected")) if running else False,
            "connected_since": live.get("connected_since") if running else None,
            "session": live.get("session"),
            "last_error": live.get("last_error"),
            # which broker user is in use after a rotation: "new", or "previous" when the
            # broker refused the new one (hubctl rotate keeps the old user until "new")
            "mqtt": live.get("mqtt") if running else None,
        },
        "outbox": _outbox(db_path(cfg.data_dir)),
        "uplink": {"up": live.get("uplink_up"), "probe": live.get("last_probe")},
        "config": {
            "version": active["version"] if active else cfg.version,
            "source": "applied from the centre" if active else "local file",
            "last_result": store.last_result(),
        },
        "status_updated": live.get("updated"),
        **local_sections(cfg, db_path(cfg.data_dir), now),
    }


def _age(ts: Any, now: float) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    s = int(now - ts)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172_800:
        return f"{s // 3600} h ago"
    return f"{s // 86_400} days ago"


def render_text(st: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    b, o, c = st["broker"], st["outbox"], st["config"]
    if not st["agent_running"]:
        conn = "unknown (agent not running)"
    elif b["connected"]:
        conn = f"connected since {_age(b['connected_since'], now)} (session {b['session']})"
        if b.get("mqtt"):
            conn += f" as {b['mqtt']['user']} ({b['mqtt']['credential']} credential)"
    else:
        conn = "disconnected" + (f": {b['last_error']}" if b["last_error"] else "")
    oldest = _age(o["oldest_queued_ts"], now) if o["oldest_queued_ts"] else "-"
    queued = f"{o['health']} samples, {o['event']} events queued; oldest {oldest}"
    if o.get("error"):
        queued = f"unknown (cannot read the database: {o['error']})"
    last = c["last_result"]
    result = "-"
    if last:
        result = f"v{last.get('version')} {last.get('status')}"
        if last.get("reason"):
            result += f" ({last['reason']})"
        result += f", {_age(last.get('ts'), now)}"
    up = st["uplink"]
    probe = up.get("probe") or {}
    uplink = "-"
    if up.get("up") is not None:
        uplink = "up" if up["up"] else "LOST"
        if probe.get("lat") is not None:
            uplink += f", {probe['lat']:.0f} ms, loss {probe.get('loss', 0):.0f}%"
    lines = [
        f"hub           {st['hub_id']}",
        f"agent         {'running' if st['agent_running'] else 'NOT RUNNING'}",
        f"broker        {b['address']}{' (TLS)' if b['tls'] else ''}: {conn}",
        f"uplink        {uplink}",
        f"outbox        {queued}",
        f"config        v{c['version']} ({c['source']})",
        f"last config   {result}",
        *render_lines(st),
    ]
    return "\n".join(lines)


def status_command(config_path: Path, as_json: bool) -> int:
    """``hub-agent status``: 0 when printed, 2 when the config cannot be read."""
    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    st = gather_status(cfg)
    with contextlib.suppress(BrokenPipeError):
        if as_json:
            print(json.dumps(st, indent=2, sort_keys=True))
        else:
            print(render_text(st))
    return 0
