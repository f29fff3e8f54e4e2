"""The captive portal's settings and what it sells: languages, login methods, ports, the
caretaker's password, plans and the free tier."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hub_agent.config.base import Ident, Localised, Strict

LoginMethod = Literal["voucher", "free", "account"]


class PortalSettings(Strict):
    languages: list[str] = Field(default_factory=lambda: ["fr", "en"], min_length=1)
    default_language: str = "fr"
    login_methods: list[LoginMethod] = Field(default_factory=lambda: ["voucher", "free"])  # type: ignore[arg-type]
    terms: Localised = Field(default_factory=dict)
    http_port: int = Field(default=8080, ge=1, le=65535)
    https_port: int | None = Field(default=None, ge=1, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    agent_socket: Path = Path("/run/relais/agent.sock")
    admin_password_hash: str | None = Field(
        default=None, description="scrypt hash set at provisioning; None disables /admin"
    )
    login_attempts: int = Field(
        default=50, ge=1, le=1000, description="wrong codes per device (MAC) per window"
    )
    lockout_seconds: int = Field(default=300, ge=10, le=86_400)

    @model_validator(mode="after")
    def _languages(self) -> PortalSettings:
        for lang in self.languages:
            if not re.match(r"^[a-z]{2,3}$", lang):
                raise ValueError(f"language code {lang!r} is not ISO 639")
        if self.default_language not in self.languages:
            raise ValueError("default_language must be one of languages")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class Plan(Strict):
    id: Ident
    name: Localised = Field(min_length=1)
    price_label: str = ""
    price_xof: int | None = Field(default=None, gt=0, description="mobile money price, whole FCFA")
    down_kbit: int = Field(gt=0, le=1_000_000)
    up_kbit: int = Field(gt=0, le=1_000_000)
    data_quota_mb: int | None = Field(default=None, gt=0, description="None: unlimited")
    time_quota_min: int | None = Field(
        default=None, gt=0, description="validity from first use; None: unlimited"
    )
    idle_timeout_min: int = Field(default=15, gt=0, le=24 * 60)
    devices_per_voucher: int = Field(default=1, ge=1, le=20)
    on_exhaustion: Literal["deauth", "throttle"] = "deauth"
    throttle_kbit: int = Field(default=64, gt=0)


class FreeTier(Strict):
    enabled: bool = True
    daily_mb: int = Field(default=100, gt=0)
    down_kbit: int = Field(default=1000, gt=0)
    up_kbit: int = Field(default=512, gt=0)
    idle_timeout_min: int = Field(default=10, gt=0)
