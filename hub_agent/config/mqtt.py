"""The hub's broker: where, as whom (and the previous user after a rotation), TLS, and
the telemetry outbox's pace and budget."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from hub_agent.config.base import Strict, url_parts


class MqttFallback(Strict):
    """The broker user a hub had before a credential rotation (``hubctl rotate``): tried
    when the broker refuses the new one, until the centre retires it."""

    username: str = Field(min_length=1)
    password: SecretStr


class MqttSettings(Strict):
    url: str = "mqtt://localhost:1883"
    username: str | None = None
    password: SecretStr | None = None
    fallback: MqttFallback | None = None
    ca_file: Path | None = None
    telemetry_interval_s: int = Field(default=60, ge=1, le=3600)
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    outbox_budget_mb: int = Field(default=32, ge=1, le=4096)
    drain_rate_per_s: float = Field(default=50.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_url(cls, data: Any) -> Any:
        # mqtt://user:pass@host:port -> url without credentials + username/password fields,
        # so the secret never travels inside a string that might be logged.
        if isinstance(data, Mapping) and isinstance(data.get("url"), str):
            parts = urlsplit(data["url"])
            if parts.username is not None:
                data = dict(data)
                data.setdefault("username", unquote(parts.username))
                if parts.password is not None:
                    data.setdefault("password", unquote(parts.password))
                host = parts.hostname or ""
                netloc = f"[{host}]" if ":" in host else host
                if parts.port:
                    netloc += f":{parts.port}"
                data["url"] = f"{parts.scheme}://{netloc}"
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = url_parts(v, ("mqtt", "mqtts"), "mqtt://host[:port] or mqtts://host[:port]")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ValueError(f"bad port: {e}") from None
        return v

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)
