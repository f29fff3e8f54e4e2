"""`captive-portal`: the portal web app, run by an unprivileged user."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hub_agent.clikit import fail, not_built, parser
from hub_agent.config import ConfigError, load_config


def main(argv: Sequence[str] | None = None) -> None:
    p = parser("captive-portal", "Relais captive portal (FastAPI under uvicorn).")
    p.add_argument("--config", type=Path, required=True, help="hub config YAML")
    p.add_argument("--host", default=None, help="listen address (default: the LAN address)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: portal.http_port)")
    args = p.parse_args(argv)
    try:
        load_config(args.config)
    except ConfigError as e:
        fail(str(e))
    not_built("captive-portal", "issue 5")


if __name__ == "__main__":
    main()
