"""Logins the centre answers for: accounts through RADIUS, and central codes' balances
that follow them between hubs (roaming)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator

from hub_agent.config.base import Strict


class RadiusServer(Strict):
    """One AAA server: authentication, accounting and the source of CoA/Disconnect."""

    address: str = Field(description="an IP address: no DNS lookup at login time")
    auth_port: int = Field(default=1812, ge=1, le=65535)
    acct_port: int = Field(default=1813, ge=1, le=65535)
    secret: SecretStr = Field(min_length=8, description="shared secret")
    timeout_s: float = Field(default=3.0, gt=0, le=30, description="per try")
    retries: int = Field(default=2, ge=0, le=10, description="tries after the first")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return str(ipaddress.ip_address(v))  # ValueError names the field


class RadiusSettings(Strict):
    """Accounts through RADIUS (login method ``account``); see hub_agent/radius."""

    primary: RadiusServer
    secondary: RadiusServer | None = Field(default=None, description="tried on timeout")
    nas_identifier: str | None = Field(default=None, max_length=253, description="None: hub id")
    called_station_id: str | None = Field(default=None, max_length=253, description="None: hub id")
    location_id: str | None = Field(default=None, max_length=253, description="WISPr-Location-ID")
    location_name: str | None = Field(default=None, max_length=253, description="None: hub name")
    down_kbit: int = Field(default=2_000, gt=0, le=1_000_000, description="when Accept says none")
    up_kbit: int = Field(default=1_000, gt=0, le=1_000_000)
    idle_timeout_min: int = Field(default=15, gt=0, le=24 * 60)
    interim_interval_s: int = Field(default=300, ge=60, le=86_400)
    coa_listen: str = Field(default="0.0.0.0", description="address for CoA/Disconnect")
    coa_port: int | None = Field(default=3799, ge=1, le=65535, description="None: no CoA")

    @field_validator("coa_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return str(ipaddress.ip_address(v))


class RoamingSettings(Strict):
    """Central codes' balances follow them between hubs (hub_agent/roaming.py)."""

    offline_share_pct: int = Field(
        default=25, ge=0, le=100,
        description="share of a central code's plan quota granted while the centre is unreachable",
    )  # fmt: skip
    query_timeout_ms: int = Field(default=200, ge=10, le=5000)  # the centre's answer at login
    report_every_s: float = Field(default=60.0, gt=0, le=3600)  # usage per code to the centre
