"""Who the hub is (id, kind, name, contact) and whom it trusts (the centre's signing key,
the central vouchers' key)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from hub_agent.config.base import Ident, Localised, Strict

HubKind = Literal["mairie", "school", "clinic"]


class HubContact(Strict):
    """Who people call about this hub (every portal page and the dashboard show it)."""

    name: str = Field(default="", max_length=80, description="e.g. the caretaker's name")
    phone: str = Field(min_length=3, max_length=40, pattern=r"^\+?[0-9][0-9 .-]*$")
    hours: Localised = Field(default_factory=dict, description="{fr: ..., en: ...}")
    support_phone: str | None = Field(
        default=None, max_length=40, description="whom the caretaker calls when the uplink is down"
    )


class HubIdentity(Strict):
    id: Ident = Field(description="stable hub id, e.g. tg-lome-mairie-01")
    kind: HubKind
    name: str = Field(min_length=1, max_length=120)
    region: str | None = None
    prefecture: str | None = None
    timezone: str = "Africa/Lome"
    contact: HubContact | None = None


class TrustSettings(Strict):
    central_public_key: str | None = Field(
        default=None, description="base64 Ed25519 public key that signs configs and vouchers"
    )
    # Central vouchers are checked offline on any hub with a truncated HMAC under this
    # per-deployment key: a code of at most 12 typeable characters cannot carry an Ed25519
    # signature (64 bytes), so hubs hold the shared secret (a hub that leaks it lets codes be
    # minted; central reconciliation reports redemptions of serials never issued).
    voucher_secret: SecretStr | None = Field(
        default=None, min_length=16, description="per-deployment key for central vouchers"
    )
