"""``python -m hub_agent.content``: run the cache on its own (tests, the lab, debugging).

    sync   --config PATH [--once] [--seconds N]   the sync loop only (no serving)
    serve  --config PATH [--seconds N]            sync + nginx + kiwix-serve + usage
    report --config PATH                          per-item state as JSON

Events are printed as JSON lines on stdout, so a test can read what the centre would get.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hub_agent.config import ConfigError, load_config
from hub_agent.content.service import ContentService, ServeOptions
from hub_agent.content.state import CONTENT
from hub_agent.content.sync import ContentSync, SyncOptions
from hub_agent.store import open_db
from hub_agent.telemetry import db_path


def print_event(type: str, /, **fields: Any) -> None:
    print(json.dumps({"type": type, **fields}, sort_keys=True), flush=True)


async def _run_for(coro_factory: Any, seconds: float | None) -> None:
    """Run until ``seconds`` pass or SIGTERM/SIGINT: either way a clean stop (nginx ends)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(coro_factory(stop))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    stop.set()
    await task


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hub_agent.content")
    p.add_argument("verb", choices=["sync", "serve", "report"])
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--once", action="store_true", help="sync: steps until nothing is left")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--retry-base", type=float, default=60.0)
    p.add_argument("--read-timeout", type=float, default=30.0)
    p.add_argument("--connect-timeout", type=float, default=15.0)
    p.add_argument("--range-chunk", type=int, default=None, help="bytes per Range request")
    p.add_argument("--listen", action="append", default=[], help="serve: ADDR:PORT")
    p.add_argument("--nginx-user", default="www-data")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    db = open_db(db_path(config.data_dir), CONTENT)
    options = SyncOptions(
        retry_base_s=args.retry_base,
        read_timeout_s=args.read_timeout,
        connect_timeout_s=args.connect_timeout,
        idle_poll_s=min(60.0, args.retry_base),
        import_every_s=min(300.0, args.retry_base),
        range_chunk=args.range_chunk,
    )
    if args.verb == "report":
        print(json.dumps(ContentSync(config, db, print_event, options).report(), indent=1))
    elif args.verb == "sync":
        sync = ContentSync(config, db, print_event, options)
        if args.once:

            async def once() -> None:
                try:
                    while await sync.step():
                        pass
                finally:
                    await sync.aclose()

            asyncio.run(once())
        else:
            asyncio.run(_run_for(sync.run, args.seconds))
    else:
        serve = ServeOptions(listen=tuple(args.listen), user=args.nginx_user, usage_every_s=1.0)
        svc = ContentService(config, db, print_event, options, serve)
        asyncio.run(_run_for(svc.run, args.seconds))


if __name__ == "__main__":
    main()
