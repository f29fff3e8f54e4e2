"""Field tools: ``hub-agent plan`` and the tracers of ``hub-agent run --trace``.

``plan`` renders, with the agent's own pure planners, what the agent would apply now:
the nft ruleset, the tc tree and dnsmasq's config, from the config and the sessions in the
hub's database (opened read-only). It applies nothing and writes nothing.

``--trace`` hands the nft and tc appliers a tracer that logs every transaction they
apply (logger ``relais.trace``), so a technician sees each kernel change as it happens.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlite_utils

from hub_agent.config import HubConfig
from hub_agent.enforce import nft_plan, tc_plan
from hub_agent.enforce.dnsmasq import render_dnsmasq
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService
from hub_agent.store import open_db
from hub_agent.telemetry import db_path

trace_log = logging.getLogger("relais.trace")


# --- plan -----------------------------------------------------------------------------------
def upstream_resolvers(
    config: HubConfig, resolv_conf: Path = Path("/etc/resolv.conf")
) -> list[str]:
    """The DNS servers dnsmasq forwards to: the config's, else the system's (never the
    hub's own LAN address, which would loop queries back to it)."""
    configured = [str(a) for a in config.network.wan.dns_servers]
    if configured:
        return configured
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    found = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
    return [a for a in found if a != str(config.network.lan.address.ip)]


def stored_state(config: HubConfig, now: float | None = None) -> DesiredState:
    """The grants the agent would enforce now: its database read-only (never migrated or
    locked for writing under a running agent); without one, staff devices only."""
    path = db_path(config.data_dir)
    if path.exists():
        db = sqlite_utils.Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True))
    else:
        db = open_db(":memory:", SESSIONS)
    try:
        return SessionService(config, db).grants(time.time() if now is None else now)
    finally:
        db.conn.close()


def _kbit(v: int) -> str:
    return f"{v // 1000}mbit" if v >= 1000 and v % 1000 == 0 else f"{v}kbit"


def _minor(classid: int) -> str:
    return f"{classid >> 16:x}:{classid & 0xFFFF:x}"


def _tree(side: tc_plan.TcSide) -> list[str]:
    children: dict[int, list[tc_plan.TcClass]] = {}
    for c in side.classes:
        children.setdefault(c.parent, []).append(c)
    lines: list[str] = []
    stack = [(c, 1) for c in reversed(children.get(tc_plan.ROOT, []))]
    while stack:  # depth first, each class under its parent
        c, depth = stack.pop()
        leaf = f" leaf (pfifo limit {c.leaf_limit} if no fq_codel)" if c.leaf else ""
        lines.append(
            f"{'  ' * depth}class {_minor(c.classid)} parent {_minor(c.parent)}"
            f" rate {_kbit(c.rate_kbit)} ceil {_kbit(c.ceil_kbit)}{leaf}"
        )
        stack += [(k, depth + 1) for k in reversed(children.get(c.classid, []))]
    return lines


def render_tc_tree(plan: tc_plan.TcPlan) -> str:
    """The HTB tree as ``tc`` would list it, one class a line, indented under its parent."""
    out: list[str] = []
    for title, side in (("download", plan.down), ("upload", plan.up)):
        out.append(f"{side.dev} ({title}): htb default {tc_plan.DEFAULT_MINOR:x}")
        out += _tree(side)
        out += [
            f"  filter prio {f.prio} u32 {' '.join(f.keys)} -> {_minor(f.target)}"
            for f in side.filters
        ]
    return "\n".join(out) + "\n"


def render_plan(config: HubConfig, state: DesiredState, resolvers: list[str]) -> str:
    """All three, as one text: what ``hub-agent plan`` prints."""
    slots = nft_plan.assign_slots(g.mac for g in nft_plan.counted_grants(state))
    ruleset = nft_plan.render_ruleset(config, state, slots)
    # The fair share as at the agent's start (one active device); the accounting pass
    # lowers it as devices become active.
    tc = tc_plan.render_tc(config, state, slots, active=1)
    devices = len(nft_plan.counted_grants(state))
    return "\n".join(
        [
            f"# hub {config.hub.id}, config v{config.version}: {devices} device(s) authorised,"
            f" {len(state.grants) - devices} staff",
            f"# nft -j -f - ({len(ruleset['nftables'])} commands, one a line)",
            '{"nftables": [',
            ",\n".join(json.dumps(c, separators=(",", ":")) for c in ruleset["nftables"]),
            "]}",
            "# tc (HTB)",
            render_tc_tree(tc),
            "# dnsmasq.conf",
            render_dnsmasq(config, resolvers),
        ]
    )


def plan_command(config: HubConfig) -> int:
    print(render_plan(config, stored_state(config), upstream_resolvers(config)), end="")
    return 0


# --- trace ----------------------------------------------------------------------------------
def trace_nft(doc: dict[str, Any]) -> None:
    for cmd in doc.get("nftables", []):
        trace_log.info("nft %s", json.dumps(cmd, separators=(",", ":")))


def trace_tc(what: str, rec: dict[str, Any]) -> None:
    trace_log.info("tc %s %s", what, rec)


def traced(enforcer: Enforcer) -> Enforcer:
    """Hand ``enforcer``'s appliers the tracers (they call them before each change)."""
    enforcer.nft.tracer = trace_nft
    if enforcer.tc is not None:
        enforcer.tc.tracer = trace_tc
    return enforcer
