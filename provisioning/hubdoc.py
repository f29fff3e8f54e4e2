"""What the centre decides for a hub: the one builder of its config document's central parts.

``hubctl enroll`` (first config) and ``hubctl push`` (every later one) both take their
"forced" fields from ``forced_fields``: identity, the hub's own broker credentials, trust
(the config-signing public key and the deployment's voucher secret, without which central
vouchers cannot be verified offline on the hub) and, on a push, the library manifest. No
push layer can change them: ``pushplan.render_hub`` merges them last.

Pure: secrets and the manifest are looked up by the callers and passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from hub_agent.config import ContentItem, HubConfig, validate_config
from provisioning.credentials import Credentials


@dataclass(frozen=True)
class Trust:
    """The deployment's keys every hub carries."""

    public_key: str  # base64 Ed25519: verifies signed configs
    voucher_key: str  # base64: verifies central vouchers offline


@dataclass(frozen=True)
class Identity:
    """Who the hub is, from the registry. ``name``/``region``/``prefecture`` are forced at
    enrollment; later pushes leave them to the config (templates may use them)."""

    id: str
    kind: str
    name: str | None = None
    region: str | None = None
    prefecture: str | None = None


def base_document() -> dict[str, Any]:
    """The config every hub starts from (``provisioning/base_config.yaml``)."""
    text = resources.files("provisioning").joinpath("base_config.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def forced_fields(
    hub: Identity,
    credentials: Credentials,
    trust: Trust,
    *,
    mqtt_url: str | None = None,
    content: Iterable[ContentItem] | None = None,
) -> dict[str, Any]:
    """The central part of a hub's config. ``mqtt_url`` is set at enrollment only (a push
    may move hubs to another broker); ``content`` is the hub's library manifest."""
    identity: dict[str, Any] = {"id": hub.id, "kind": hub.kind}
    if hub.name is not None:
        identity.update(name=hub.name, region=hub.region, prefecture=hub.prefecture)
    mqtt = credentials.mqtt_fields()  # with the previous user as fallback mid-rotation
    if mqtt_url is not None:
        mqtt = {"url": mqtt_url, **mqtt}
    doc: dict[str, Any] = {
        "hub": identity,
        "mqtt": mqtt,
        "trust": {"central_public_key": trust.public_key, "voucher_secret": trust.voucher_key},
    }
    if content is not None:
        doc["content"] = {"items": [i.model_dump(mode="json", exclude_none=True) for i in content]}
    return doc


def first_config(
    hub: Identity,
    version: int,
    mqtt_url: str,
    credentials: Credentials,
    trust: Trust,
    admin_hash: str,
) -> HubConfig:
    """The config ``hubctl enroll`` installs: the base document, then the forced fields."""
    doc = base_document()
    doc.update(forced_fields(hub, credentials, trust, mqtt_url=mqtt_url))
    doc["version"] = version
    doc.setdefault("portal", {})["admin_password_hash"] = admin_hash
    return validate_config(doc, source=f"hub {hub.id} first config")


def redacted(wire: dict[str, Any]) -> dict[str, Any]:
    """The config as the registry keeps it: the broker password and the voucher secret
    stay in secrets/."""
    out = dict(wire)
    out["mqtt"] = {**out.get("mqtt", {}), "password": None}
    out["mqtt"].pop("fallback", None)
    out["trust"] = {**out.get("trust", {}), "voucher_secret": None}
    return out
