"""The central catalogue: library items, their targets, and each hub's manifest.

Lives in the controller's registry database (``Migrations("content_catalogue")`` of
``provisioning.storage``: SQLite or PostgreSQL, next to the provisioning helper's ``hubs``
table). An item targets hubs by id, kind, region, named
group, or all; ``manifest_for`` turns that into the list of ``ContentItem`` a hub's config
carries (``content.items``), so each hub receives its manifest with its config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import ValidationError

from hub_agent.config import ContentItem
from hub_agent.content.plan import expired
from provisioning.storage import Database, Migrations, transaction

CATALOGUE = Migrations("content_catalogue")
TargetKind = Literal["hub", "kind", "region", "group", "all"]
TARGET_KINDS: tuple[TargetKind, ...] = ("hub", "kind", "region", "group", "all")


@CATALOGUE
def m001_catalogue(db: Database) -> None:
    db.execute(
        "CREATE TABLE content_catalogue ("
        " id TEXT PRIMARY KEY,"
        " item TEXT NOT NULL,"  # the validated ContentItem as JSON: one schema, hub and centre
        " added_at DOUBLE PRECISION NOT NULL,"
        " updated_at DOUBLE PRECISION NOT NULL)"
    )
    db.execute(
        "CREATE TABLE content_targets ("
        " item_id TEXT NOT NULL REFERENCES content_catalogue(id) ON DELETE CASCADE,"
        " target TEXT NOT NULL,"
        " value TEXT NOT NULL,"
        " PRIMARY KEY (item_id, target, value))"
    )


class CatalogueError(ValueError):
    """Bad input for the catalogue; the message names the field."""


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    value: str = ""  # "" for "all"

    def label(self) -> str:
        return "all" if self.kind == "all" else f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class HubRef:
    """What targeting needs to know of a hub."""

    id: str
    kind: str
    region: str | None = None
    groups: tuple[str, ...] = ()


def matches(target: Target, hub: HubRef) -> bool:
    if target.kind == "all":
        return True
    if target.kind == "hub":
        return target.value == hub.id
    if target.kind == "kind":
        return target.value == hub.kind
    if target.kind == "region":
        return hub.region is not None and target.value.lower() == hub.region.lower()
    return target.value in hub.groups


def select_for_hub(
    items: Sequence[ContentItem],
    targets: dict[str, list[Target]],
    hub: HubRef,
    today: date,
) -> list[ContentItem]:
    """Pure: the items any of whose targets match ``hub``, minus expired ones.

    Pinned items first, then by id, so a manifest (and the config holding it) renders
    the same way every time: no spurious new config version.
    """
    chosen = [
        i
        for i in items
        if not expired(i, today) and any(matches(t, hub) for t in targets.get(i.id, []))
    ]
    return sorted(chosen, key=lambda i: (i.priority != "pinned", i.id))


def validate_item(data: dict[str, Any]) -> ContentItem:
    try:
        return ContentItem.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'item'}: {err['msg']}" for err in e.errors()
        )
        raise CatalogueError(problems) from None


def add_item(db: Database, item: ContentItem, replace: bool = False) -> bool:
    """Store an item; True when it was new. An existing id needs ``replace``."""
    now = time.time()
    exists = bool(list(db.query("SELECT 1 FROM content_catalogue WHERE id = ?", [item.id])))
    if exists and not replace:
        raise CatalogueError(f"id: {item.id!r} is already in the catalogue (use --replace)")
    doc = json.dumps(item.model_dump(mode="json", exclude_none=True), sort_keys=True)
    db.execute(
        "INSERT INTO content_catalogue (id, item, added_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET item = excluded.item, updated_at = excluded.updated_at",
        [item.id, doc, now, now],
    )
    return not exists


def items(db: Database) -> list[ContentItem]:
    return [
        ContentItem.model_validate_json(r["item"])
        for r in db.query("SELECT item FROM content_catalogue ORDER BY id")
    ]


def targets(db: Database) -> dict[str, list[Target]]:
    out: dict[str, list[Target]] = {}
    for r in db.query("SELECT * FROM content_targets ORDER BY item_id, target, value"):
        out.setdefault(r["item_id"], []).append(Target(r["target"], r["value"]))
    return out


def assign(db: Database, item_id: str, new: Iterable[Target], remove: bool = False) -> None:
    if not list(db.query("SELECT 1 FROM content_catalogue WHERE id = ?", [item_id])):
        raise CatalogueError(f"item: no item {item_id!r} in the catalogue")
    with transaction(db):
        for t in new:
            if t.kind not in TARGET_KINDS:
                raise CatalogueError(f"target: unknown kind {t.kind!r}")
            if remove:
                db.execute(
                    "DELETE FROM content_targets WHERE item_id = ? AND target = ? AND value = ?",
                    [item_id, t.kind, t.value],
                )
            else:
                db.execute(
                    "INSERT INTO content_targets (item_id, target, value)"
                    " VALUES (?, ?, ?) ON CONFLICT (item_id, target, value) DO NOTHING",
                    [item_id, t.kind, t.value],
                )


def hub_ref(db: Database, hub_id: str) -> HubRef:
    """A hub as the registry (``hubs`` table, provisioning) knows it."""
    if "hubs" not in db.table_names():
        raise CatalogueError(f"hub: no registry of hubs here (enroll {hub_id!r} first)")
    rows = list(db.query("SELECT id, kind, region, groups FROM hubs WHERE id = ?", [hub_id]))
    if not rows:
        raise CatalogueError(f"hub: {hub_id!r} is not enrolled")
    r = rows[0]
    groups = json.loads(r.get("groups") or "[]")
    return HubRef(r["id"], r["kind"], r.get("region"), tuple(str(g) for g in groups))


def manifest_for(db: Database, hub: str | HubRef, today: date | None = None) -> list[ContentItem]:
    """The hub's manifest, to embed in its config as ``content.items``.

    Safe to call on any registry: the catalogue's tables are created if missing (empty).
    """
    CATALOGUE.apply(db)
    ref = hub_ref(db, hub) if isinstance(hub, str) else hub
    return select_for_hub(items(db), targets(db), ref, today or date.today())


def embed_manifest(config_doc: dict[str, Any], manifest: Sequence[ContentItem]) -> dict[str, Any]:
    """A copy of a config document with ``content.items`` set to ``manifest``."""
    doc = dict(config_doc)
    content = dict(doc.get("content") or {})
    content["items"] = [i.model_dump(mode="json", exclude_none=True) for i in manifest]
    doc["content"] = content
    return doc
