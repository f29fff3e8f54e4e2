"""The hub configuration: one validated, versioned document.

The same model validates a config read from disk (``hub-agent run --config``), a config
received over MQTT and a config rendered centrally by ``hubctl push``, so a document the
centre accepts is exactly one a hub accepts. Unknown keys are refused everywhere.

One module a section: base (the strict model, ids, MACs, URLs, ``ConfigError``), identity
(the hub and whom it trusts), network (LAN, WAN, walled garden, zero-rated, staff), portal
(the portal, plans, free tier), content (the library), mqtt (the broker), radius (RADIUS
accounts, roaming), document (``HubConfig``), loading (YAML, environment, validation).
Callers import from ``hub_agent.config``.
"""

from __future__ import annotations

from hub_agent.config.base import ConfigError, Ident, Localised, normalise_mac
from hub_agent.config.content import ContentItem, ContentKind, ContentSettings
from hub_agent.config.document import HubConfig
from hub_agent.config.identity import HubContact, HubIdentity, HubKind, TrustSettings
from hub_agent.config.loading import apply_env_overrides, load_config, parse_yaml, validate_config
from hub_agent.config.mqtt import MqttFallback, MqttSettings
from hub_agent.config.network import (
    DEFAULT_STAFF_SHARE_PCT,
    DestinationSet,
    LanSettings,
    NetworkSettings,
    StaffDevice,
    StaffSettings,
    WanSettings,
)
from hub_agent.config.portal import FreeTier, LoginMethod, Plan, PortalSettings
from hub_agent.config.radius import RadiusServer, RadiusSettings, RoamingSettings

__all__ = [
    "DEFAULT_STAFF_SHARE_PCT",
    "ConfigError",
    "ContentItem",
    "ContentKind",
    "ContentSettings",
    "DestinationSet",
    "FreeTier",
    "HubConfig",
    "HubContact",
    "HubIdentity",
    "HubKind",
    "Ident",
    "LanSettings",
    "Localised",
    "LoginMethod",
    "MqttFallback",
    "MqttSettings",
    "NetworkSettings",
    "Plan",
    "PortalSettings",
    "RadiusServer",
    "RadiusSettings",
    "RoamingSettings",
    "StaffDevice",
    "StaffSettings",
    "TrustSettings",
    "WanSettings",
    "apply_env_overrides",
    "load_config",
    "normalise_mac",
    "parse_yaml",
    "validate_config",
]
