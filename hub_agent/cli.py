"""`hub-agent`: the daemon on every hub and the caretaker's view of it."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Collection, Sequence
from pathlib import Path

from hub_agent import __version__
from hub_agent.clikit import fail, parser
from hub_agent.config import ConfigError, HubConfig, load_config
from hub_agent.configsync import load_active_config


def build_parser() -> argparse.ArgumentParser:
    p = parser("hub-agent", "Relais hub agent: enforcement, accounting, telemetry, config sync.")
    p.add_argument("--version", action="version", version=f"hub-agent {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = sub.add_parser("run", help="run the agent (root, under systemd)")
    run.add_argument("--config", type=Path, required=True, help="hub config YAML")
    run.add_argument("--trace", action="store_true", help="log every nft/tc change applied")

    plan = sub.add_parser(
        "plan", help="print the nft ruleset, tc tree and dnsmasq config it would apply now"
    )
    plan.add_argument("--config", type=Path, default=Path("/etc/relais/hub.yaml"))

    status = sub.add_parser("status", help="health, clients, quotas, cache, uplink, config")
    status.add_argument("--config", type=Path, default=Path("/etc/relais/hub.yaml"))
    status.add_argument("--json", action="store_true", help="machine-readable output")

    vouchers = sub.add_parser("vouchers", help="vouchers valid on this hub")
    vsub = vouchers.add_subparsers(dest="vverb", required=True, metavar="VERB")
    issue = vsub.add_parser("issue", help="issue a batch of vouchers for a plan")
    issue.add_argument("--config", type=Path, default=Path("/etc/relais/hub.yaml"))
    issue.add_argument("--plan", required=True)
    issue.add_argument("--count", type=int, required=True)
    issue.add_argument("--json", action="store_true")
    return p


def missing_interface(config: HubConfig, present: Collection[str]) -> str | None:
    """The one line ``hub-agent run`` prints when the box lacks a configured interface."""
    for field, name in (
        ("network.lan.interface", config.network.lan.interface),
        ("network.wan.interface", config.network.wan.interface),
    ):
        if name not in present:
            here = ", ".join(sorted(present)) or "none"
            return (
                f"hub-agent: interface {name!r} ({field}) does not exist on this machine "
                f"(interfaces here: {here}); fix the config or the network setup"
            )
    return None


def _interfaces() -> list[str]:
    # Asked of the kernel for this process's network namespace: /sys/class/net shows the
    # namespace sysfs was mounted in, which a container (or `ip netns exec`) may not share.
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError:
        return []


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.verb in ("run", "plan"):
        try:
            # The last config applied from the centre wins over the file when newer, so a
            # restart without the broker resumes where the hub was.
            config = load_active_config(load_config(args.config).data_dir, args.config)
        except ConfigError as e:
            fail(str(e))
        if args.verb == "plan":
            from hub_agent.fieldtools import plan_command

            raise SystemExit(plan_command(config))
        problem = missing_interface(config, _interfaces())
        if problem:
            fail(problem, 3)
        from hub_agent.daemon import run_agent

        raise SystemExit(run_agent(config, trace=args.trace))
    if args.verb == "status":
        from hub_agent.status import status_command

        raise SystemExit(status_command(args.config, args.json))
    if args.verb == "vouchers":
        from hub_agent.sessions.cli import issue_vouchers_command

        raise SystemExit(issue_vouchers_command(args.config, args.plan, args.count, args.json))


if __name__ == "__main__":
    main()
