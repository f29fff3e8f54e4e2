"""The whole hub config document: its sections and the checks that span them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hub_agent.config.base import Strict
from hub_agent.config.content import ContentSettings
from hub_agent.config.identity import HubIdentity, TrustSettings
from hub_agent.config.mqtt import MqttSettings
from hub_agent.config.network import (
    DEFAULT_STAFF_SHARE_PCT,
    DestinationSet,
    NetworkSettings,
    StaffSettings,
)
from hub_agent.config.portal import FreeTier, Plan, PortalSettings
from hub_agent.config.radius import RadiusSettings, RoamingSettings


class HubConfig(Strict):
    version: int = Field(ge=1, description="strictly increasing")
    hub: HubIdentity
    data_dir: Path = Path("/var/lib/relais")
    network: NetworkSettings = NetworkSettings()
    portal: PortalSettings = PortalSettings()
    plans: list[Plan] = Field(default_factory=list)
    free_tier: FreeTier = FreeTier()
    walled_garden: DestinationSet = DestinationSet()
    zero_rated: DestinationSet = DestinationSet()
    staff: StaffSettings = StaffSettings()
    content: ContentSettings = ContentSettings()
    mqtt: MqttSettings = MqttSettings()
    trust: TrustSettings = TrustSettings()
    roaming: RoamingSettings = RoamingSettings()
    # validated even when absent: login method "account" needs it
    radius: RadiusSettings | None = Field(default=None, validate_default=True)

    @field_validator("radius")
    @classmethod
    def _radius_for_accounts(
        cls, v: RadiusSettings | None, info: ValidationInfo
    ) -> RadiusSettings | None:
        portal = info.data.get("portal")
        if v is None and portal is not None and "account" in portal.login_methods:
            raise ValueError("portal.login_methods has 'account': a radius section is needed")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> HubConfig:
        ids = [p.id for p in self.plans]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate plan ids: {sorted(dup)}")
        if "voucher" in self.portal.login_methods and not self.plans:
            raise ValueError("voucher login needs at least one plan")
        if "free" in self.portal.login_methods and not self.free_tier.enabled:
            raise ValueError("free login needs free_tier.enabled")
        return self

    @property
    def staff_share_pct(self) -> int:
        share = self.staff.guaranteed_share_pct
        return DEFAULT_STAFF_SHARE_PCT[self.hub.kind] if share is None else share

    def plan(self, plan_id: str) -> Plan:
        for p in self.plans:
            if p.id == plan_id:
                return p
        raise KeyError(plan_id)

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict including secrets (for signing and sending, never for logs)."""
        data = self.model_dump(mode="json")
        if self.mqtt.password is not None:
            data["mqtt"]["password"] = self.mqtt.password.get_secret_value()
        if self.mqtt.fallback is not None:
            data["mqtt"]["fallback"]["password"] = self.mqtt.fallback.password.get_secret_value()
        if self.trust.voucher_secret is not None:
            data["trust"]["voucher_secret"] = self.trust.voucher_secret.get_secret_value()
        if self.radius is not None:
            for name in ("primary", "secondary"):
                server = getattr(self.radius, name)
                if server is not None:
                    data["radius"][name]["secret"] = server.secret.get_secret_value()
        return data
