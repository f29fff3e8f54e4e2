"""Run telemetry alone: ``python -m hub_agent.telemetry --config hub.yaml``.

The daemon (``hub-agent run``) embeds ``Telemetry``; this entry point runs just the
telemetry loop, for the crash tests (kill -9 mid-drain), benchmarks and field debugging.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from hub_agent.config import load_config
from hub_agent.telemetry.health import ping_probe
from hub_agent.telemetry.service import Telemetry


async def _main(args: argparse.Namespace) -> None:
    cfg = load_config(args.config)
    tel = Telemetry(
        cfg,
        interval_s=args.interval,
        drain_rate_per_s=None if args.no_rate_limit else cfg.mqtt.drain_rate_per_s,
        probe=None if args.no_probe else ping_probe,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await tel.start()
    await stop.wait()
    await tel.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hub_agent.telemetry")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--interval", type=float, default=None, help="seconds between samples")
    p.add_argument("--no-probe", action="store_true", help="no uplink probe")
    p.add_argument("--no-rate-limit", action="store_true", help="drain as fast as possible")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
