"""Push planning, pure: select hubs, merge layered YAML, render templates, validate, waves.

A push file is YAML with optional sections, applied in this order (later wins)::

    defaults: {...}            # every targeted hub
    kinds:    {school: {...}}  # by hub kind
    regions:  {Maritime: {...}}
    groups:   {pilot: {...}}   # named groups given at enrollment (--group)
    hubs:     {tg-x: {...}}    # per-hub overrides

A document without any of these sections is taken as ``defaults``. Mappings merge key by
key; lists and scalars replace, except ``plans`` given as a mapping ``{id: {key: value}}``,
which edits the listed plans by id (``null`` removes one; see ``merge_plans``). String
values may be Jinja2 templates over ``hub`` (``"{{ hub.name }}"``), rendered in a sandbox.
Each hub's result is validated with the agent's own schema before anything is published.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from hub_agent.config import ConfigError, HubConfig, validate_config

SECTIONS = ("defaults", "kinds", "regions", "groups", "hubs")
KIND_ALIASES = {
    "mairie": "mairie",
    "mairies": "mairie",
    "school": "school",
    "schools": "school",
    "clinic": "clinic",
    "clinics": "clinic",
}


class PushError(ValueError):
    """A push refused before anything was published; the message names hub and field."""


@dataclass(frozen=True)
class HubView:
    """What planning needs to know about a hub (from the registry)."""

    id: str
    kind: str
    name: str
    region: str | None = None
    prefecture: str | None = None
    groups: tuple[str, ...] = ()

    def context(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "region": self.region or "",
            "prefecture": self.prefecture or "",
            "groups": list(self.groups),
        }


@dataclass(frozen=True)
class PushFile:
    defaults: dict[str, Any] = field(default_factory=dict)
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    regions: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    hubs: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_push_file(data: Any) -> PushFile:
    if not isinstance(data, Mapping):
        raise PushError("push file: expected a mapping at the top level")
    if not any(k in data for k in SECTIONS):
        return PushFile(defaults=dict(data))
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise PushError(f"push file: unknown sections {unknown} (known: {', '.join(SECTIONS)})")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise PushError("push file: defaults: expected a mapping")
    named: dict[str, dict[str, dict[str, Any]]] = {}
    for section in SECTIONS[1:]:
        value = data.get(section) or {}
        if not isinstance(value, Mapping):
            raise PushError(f"push file: {section}: expected a mapping of name -> settings")
        for name, layer in value.items():
            if not isinstance(layer, Mapping):
                raise PushError(f"push file: {section}.{name}: expected a mapping")
        named[section] = {str(k): dict(v) for k, v in value.items()}
    if "kinds" in named:
        bad = sorted(set(named["kinds"]) - {"mairie", "school", "clinic"})
        if bad:
            raise PushError(f"push file: kinds: unknown kinds {bad}")
    return PushFile(defaults=dict(defaults), **named)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge recursively; anything else (lists included) in ``over`` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge_plans(base: Any, edits: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """``plans`` given as a mapping ``{plan_id: {key: value}}`` edits the list by id:
    an existing plan's keys merge (as mappings do), a new id is appended (it must then be
    a whole plan), ``null`` removes the plan. A list still replaces the whole list."""
    plans = [dict(p) for p in base] if isinstance(base, list) else []
    index = {str(p.get("id")): i for i, p in enumerate(plans)}
    removed: set[str] = set()
    for plan_id, change in edits.items():
        pid = str(plan_id)
        if change is None:
            if pid not in index:
                raise PushError(f"{where}.plans.{pid}: no such plan to remove")
            removed.add(pid)
        elif not isinstance(change, Mapping):
            raise PushError(f"{where}.plans.{pid}: expected a mapping of plan settings or null")
        elif pid in index:
            plans[index[pid]] = deep_merge(plans[index[pid]], change)
        else:
            index[pid] = len(plans)
            plans.append({"id": pid, **change})
    return [p for p in plans if str(p.get("id")) not in removed]


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["price_xof=150", "name.fr=Journée"]`` -> ``{"price_xof": 150, "name": {"fr":
    "Journée"}}``: values are YAML scalars (numbers, true/false, null), dots nest."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PushError(f"{item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list):
            raise PushError(f"{key}: a single value is expected (use name.fr=... to nest)")
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PushError(f"{key}: {part} is set twice")
            node = child
        node[leaf] = value
    return out


def apply_layer(doc: Mapping[str, Any], layer: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One push layer over a document: ``deep_merge``, except ``plans`` as a mapping,
    which edits the plan list by id (``merge_plans``)."""
    plans = layer.get("plans")
    if isinstance(plans, Mapping):
        rest = {k: v for k, v in layer.items() if k != "plans"}
        out = deep_merge(doc, rest)
        out["plans"] = merge_plans(doc.get("plans"), plans, name)
        return out
    return deep_merge(doc, layer)


def layers_for(hub: HubView, pf: PushFile) -> list[tuple[str, dict[str, Any]]]:
    """The push file's layers that apply to ``hub``, in merge order, with their names."""
    out: list[tuple[str, dict[str, Any]]] = []
    if pf.defaults:
        out.append(("defaults", pf.defaults))
    if hub.kind in pf.kinds:
        out.append((f"kinds.{hub.kind}", pf.kinds[hub.kind]))
    if hub.region and hub.region in pf.regions:
        out.append((f"regions.{hub.region}", pf.regions[hub.region]))
    for g in sorted(hub.groups):
        if g in pf.groups:
            out.append((f"groups.{g}", pf.groups[g]))
    if hub.id in pf.hubs:
        out.append((f"hubs.{hub.id}", pf.hubs[hub.id]))
    return out


_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def render_templates(value: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """Render every string holding ``{{``/``{%`` as a sandboxed Jinja2 template."""
    if isinstance(value, Mapping):
        return {
            k: render_templates(v, context, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_templates(v, context, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        try:
            return _ENV.from_string(value).render(**context)
        except jinja2.TemplateError as e:
            raise PushError(f"{path or '(document)'}: template error: {e}") from None
    return value


def select_targets(hubs: Sequence[HubView], group: str) -> list[HubView]:
    """``--group``: ``all``, a kind (``schools`` or ``school``), ``kind:K``, ``region:R``,
    or a named group; a bare name that is a region also selects that region."""
    if group == "all":
        chosen = list(hubs)
    elif group.startswith("kind:"):
        kind = KIND_ALIASES.get(group[5:], group[5:])
        chosen = [h for h in hubs if h.kind == kind]
    elif group.startswith("region:"):
        chosen = [h for h in hubs if (h.region or "").lower() == group[7:].lower()]
    elif group.startswith("group:"):
        chosen = [h for h in hubs if group[6:] in h.groups]
    elif group in KIND_ALIASES:
        chosen = [h for h in hubs if h.kind == KIND_ALIASES[group]]
    else:
        chosen = [h for h in hubs if group in h.groups or (h.region or "").lower() == group.lower()]
    return sorted(chosen, key=lambda h: h.id)


@dataclass(frozen=True)
class Rendered:
    hub_id: str
    version: int
    config: HubConfig
    layers: tuple[str, ...]


def render_hub(
    hub: HubView,
    base: Mapping[str, Any],
    pf: PushFile,
    version: int,
    forced: Mapping[str, Any],
) -> Rendered:
    """Base config + the file's layers for this hub, templates rendered, then ``forced``
    (identity, credentials, trust) merged last; validated with the agent's schema."""
    layers = layers_for(hub, pf)
    doc: dict[str, Any] = dict(base)
    for name, layer in layers:
        doc = apply_layer(doc, layer, name)
    try:
        doc = render_templates(doc, {"hub": hub.context()})
    except PushError as e:
        raise PushError(f"hub {hub.id}: {e}") from None
    doc = deep_merge(doc, forced)
    doc["version"] = version
    try:
        config = validate_config(doc, source=f"hub {hub.id}")
    except ConfigError as e:
        raise PushError(str(e)) from None
    return Rendered(hub.id, version, config, tuple(n for n, _ in layers))


def render_all(
    hubs: Iterable[HubView],
    bases: Mapping[str, Mapping[str, Any]],
    pf: PushFile,
    versions: Mapping[str, int],
    forced: Mapping[str, Mapping[str, Any]],
) -> list[Rendered]:
    """Render every hub; refuse the whole push if ANY hub's config is invalid."""
    out, errors = [], []
    for hub in hubs:
        try:
            out.append(render_hub(hub, bases[hub.id], pf, versions[hub.id], forced[hub.id]))
        except PushError as e:
            errors.append(str(e))
    if errors:
        raise PushError("; ".join(errors))
    return out


# --- staged rollout ----------------------------------------------------------------------


def parse_wave(text: str) -> float:
    value = text.strip().rstrip("%")
    try:
        pct = float(value)
    except ValueError:
        raise PushError(f"--wave: expected a percentage like 10%, got {text!r}") from None
    if not 0 < pct <= 100:
        raise PushError("--wave: the percentage must be in (0, 100]")
    return pct


def plan_waves(hub_ids: Sequence[str], pct: float | None) -> list[list[str]]:
    """Split targets into waves of ceil(pct% of n) hubs; the first wave is the canary."""
    ids = list(hub_ids)
    if not ids:
        return []
    if pct is None or pct >= 100:
        return [ids]
    size = max(1, math.ceil(len(ids) * pct / 100))
    return [ids[i : i + size] for i in range(0, len(ids), size)]


FAILED = frozenset({"rejected", "rolled_back", "timeout"})


def failures(outcomes: Mapping[str, str]) -> int:
    return sum(1 for s in outcomes.values() if s in FAILED)


def may_continue(outcomes: Mapping[str, str], max_failures: int) -> bool:
    """Go on with the next wave only while failures so far stay within the threshold."""
    return failures(outcomes) <= max_failures
