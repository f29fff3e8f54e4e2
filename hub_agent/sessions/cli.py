"""``hub-agent vouchers issue``: the caretaker prints a batch of codes valid on this hub."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hub_agent.config import ConfigError, load_config
from hub_agent.sessions import db_path
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService
from hub_agent.sessions.vouchers import format_code

MAX_BATCH = 1000


def issue_vouchers_command(config_path: Path, plan: str, count: int, as_json: bool) -> int:
    """Print ``count`` new hub-local codes for ``plan`` (one per line, or a JSON list).

    Exit 0 on success, 2 on a bad argument or config (the message names what is wrong)."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    known = [p.id for p in config.plans]
    if plan not in known:
        print(
            f"--plan: unknown plan {plan!r} (this hub sells: {', '.join(known)})", file=sys.stderr
        )
        return 2
    if not 1 <= count <= MAX_BATCH:
        print(f"--count: {count} is outside 1..{MAX_BATCH}", file=sys.stderr)
        return 2
    service = SessionService(config, open_sessions_db(db_path(config.data_dir)))
    codes = [format_code(c) for c in service.issue_local_vouchers(plan, count)]
    p = config.plan(plan)
    if as_json:
        out = {
            "plan": plan,
            "price_label": p.price_label,
            "devices_per_voucher": p.devices_per_voucher,
            "codes": codes,
        }
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(codes))
    return 0
