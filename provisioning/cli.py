"""`hubctl`: central operations over the fleet."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hub_agent.clikit import not_built, parser


def build_parser() -> argparse.ArgumentParser:
    p = parser("hubctl", "Relais central operations: enroll, push, fleet, vouchers, content.")
    p.add_argument("--db", default=None, help="registry database URL (default: sqlite file)")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    enroll = sub.add_parser("enroll", help="enroll a hub (identity, broker credentials, ACL)")
    enroll.add_argument("hub_id")
    enroll.add_argument("--kind", required=True, choices=["mairie", "school", "clinic"])
    enroll.add_argument("--name", required=True)
    enroll.add_argument("--region", default=None)

    push = sub.add_parser("push", help="push a config to a hub or a group")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("hub_id", nargs="?")
    target.add_argument("--group")
    push.add_argument("file", type=Path)

    fleet = sub.add_parser("fleet", help="fleet health table")
    fleet.add_argument("--json", action="store_true")

    vouchers = sub.add_parser("vouchers", help="centrally issued vouchers")
    vsub = vouchers.add_subparsers(dest="vverb", required=True, metavar="VERB")
    issue = vsub.add_parser("issue")
    issue.add_argument("--plan", required=True)
    issue.add_argument("--count", type=int, required=True)
    issue.add_argument("--out", type=Path, default=None)

    content = sub.add_parser("content", help="content library catalogue")
    csub = content.add_subparsers(dest="cverb", required=True, metavar="VERB")
    csub.add_parser("add")
    csub.add_parser("list")
    csub.add_parser("assign")

    controller = sub.add_parser("controller", help="central controller")
    ctsub = controller.add_subparsers(dest="ctverb", required=True, metavar="VERB")
    ctsub.add_parser("run", help="health ingest and fleet web page")
    return p


_ISSUES = {
    "enroll": "issue 8",
    "push": "issue 8",
    "fleet": "issue 8",
    "vouchers": "issue 6",
    "content": "issue 9",
    "controller": "issue 8",
}


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    not_built(f"hubctl {args.verb}", _ISSUES[args.verb])


if __name__ == "__main__":
    main()
