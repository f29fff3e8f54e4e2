"""``hubctl content add|list|assign``: the central library catalogue.

``register(subparsers)`` adds the three verbs under ``hubctl content`` (provisioning/cli.py
calls it); each sets ``func`` to its handler, called with the parsed arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hub_agent.content.library import sha256_file
from provisioning import content_catalogue as catalogue
from provisioning import registry
from provisioning.content_catalogue import CatalogueError, Target
from provisioning.statedir import StateDir
from provisioning.storage import Database

KINDS = ("video", "pdf", "zim", "html", "app")


def register(subparsers: Any) -> None:
    add = subparsers.add_parser("add", help="add (or --replace) an item in the catalogue")
    add.add_argument("item_id", metavar="ID", help="lower-case letters, digits, '-'")
    add.add_argument("--kind", required=True, choices=KINDS)
    add.add_argument("--url", required=True, help="http(s) source the hubs fetch")
    add.add_argument("--title-fr", required=True)
    add.add_argument("--title-en", default=None)
    add.add_argument("--language", default="fr", help="the item's own language (default fr)")
    add.add_argument("--file", type=Path, default=None, help="local copy: size and sha256")
    add.add_argument("--size", type=int, default=None, help="bytes (without --file)")
    add.add_argument("--sha256", default=None, help="64 hex digits (without --file)")
    add.add_argument("--pinned", action="store_true", help="never evicted from a hub")
    add.add_argument("--valid-until", default=None, metavar="YYYY-MM-DD")
    add.add_argument("--replace", action="store_true", help="overwrite an existing id")
    add.set_defaults(func=cmd_add)

    lst = subparsers.add_parser("list", help="the catalogue, or one hub's manifest")
    lst.add_argument("--hub", default=None, help="show what this hub receives")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    asg = subparsers.add_parser("assign", help="target an item at hubs")
    asg.add_argument("item_id", metavar="ID")
    asg.add_argument("--hub", action="append", default=[], help="hub id (repeatable)")
    asg.add_argument("--kind", action="append", default=[], choices=["mairie", "school", "clinic"])
    asg.add_argument("--region", action="append", default=[])
    asg.add_argument("--group", action="append", default=[], help="named group")
    asg.add_argument("--all", action="store_true", help="every hub")
    asg.add_argument("--remove", action="store_true", help="remove these targets instead")
    asg.set_defaults(func=cmd_assign)


def open_catalogue(args: argparse.Namespace) -> Database:
    """The registry database, as ``hubctl`` resolves it (--db, else <state>/registry.db)."""
    state = StateDir.from_env(getattr(args, "state", None))
    path = registry.db_path_from_url(getattr(args, "db", None), state.registry_path)
    if path == str(state.registry_path):
        state.ensure()
    return registry.open_registry(path)


def _fail(message: str) -> int:
    print(f"hubctl content: {message}", file=sys.stderr)
    return 2


def cmd_add(args: argparse.Namespace) -> int:
    size, digest = args.size, args.sha256
    if args.file is not None:
        if size is not None or digest is not None:
            return _fail("--file computes --size and --sha256: give one or the other")
        if not args.file.is_file():
            return _fail(f"--file: {args.file} is not a readable file")
        size, digest = args.file.stat().st_size, sha256_file(args.file)
    elif size is None or digest is None:
        return _fail("give --file, or both --size and --sha256")
    title = {"fr": args.title_fr}
    if args.title_en:
        title["en"] = args.title_en
    data: dict[str, Any] = {
        "id": args.item_id,
        "title": title,
        "kind": args.kind,
        "url": args.url,
        "size": size,
        "sha256": digest,
        "priority": "pinned" if args.pinned else "normal",
        "language": args.language,
        "valid_until": args.valid_until,
    }
    try:
        item = catalogue.validate_item(data)
        new = catalogue.add_item(open_catalogue(args), item, replace=args.replace)
    except (CatalogueError, ValueError) as e:
        return _fail(str(e))
    print(
        f"{'added' if new else 'replaced'} {item.id}: {item.kind}, {item.size} bytes, "
        f"sha256 {item.sha256[:12]}…, {item.priority}"
    )
    return 0


def _targets(args: argparse.Namespace) -> list[Target]:
    out = [Target("hub", v) for v in args.hub]
    out += [Target("kind", v) for v in args.kind]
    out += [Target("region", v) for v in args.region]
    out += [Target("group", v) for v in args.group]
    if args.all:
        out.append(Target("all", ""))
    return out


def cmd_assign(args: argparse.Namespace) -> int:
    new = _targets(args)
    if not new:
        return _fail("assign: give at least one of --hub, --kind, --region, --group, --all")
    try:
        db = open_catalogue(args)
        catalogue.assign(db, args.item_id, new, remove=args.remove)
    except (CatalogueError, ValueError) as e:
        return _fail(str(e))
    now = ", ".join(t.label() for t in catalogue.targets(db).get(args.item_id, [])) or "none"
    print(f"{args.item_id}: targets now {now}")
    print("hubs receive it with their next config push (hubctl push)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        db = open_catalogue(args)
        chosen = catalogue.manifest_for(db, args.hub) if args.hub else catalogue.items(db)
    except (CatalogueError, ValueError) as e:
        return _fail(str(e))
    tg = catalogue.targets(db)
    if args.json:
        rows = [
            {
                **i.model_dump(mode="json", exclude_none=True),
                "targets": [t.label() for t in tg.get(i.id, [])],
            }
            for i in chosen
        ]
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    if not chosen:
        print("no items" + (f" for {args.hub}" if args.hub else ""))
        return 0
    print(f"{'ID':<28} {'KIND':<6} {'LANG':<4} {'SIZE':>10} {'PRIO':<7} TARGETS")
    for i in chosen:
        size = f"{i.size / 1e6:.1f} MB"
        labels = ",".join(t.label() for t in tg.get(i.id, [])) or "-"
        print(f"{i.id:<28} {i.kind:<6} {i.language:<4} {size:>10} {i.priority:<7} {labels}")
    return 0
