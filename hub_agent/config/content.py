"""The library: the hub's manifest of items and how it syncs and serves them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from hub_agent.config.base import Ident, Localised, Strict, url_parts

_WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ContentKind = Literal["video", "pdf", "zim", "html", "app"]


class ContentItem(Strict):
    """One library item assigned to this hub (the manifest travels inside the config)."""

    id: Ident
    title: Localised = Field(min_length=1, description="{fr: ..., en: ...}")
    kind: ContentKind
    url: str = Field(description="http(s) source the hub fetches, off-peak, once")
    size: int = Field(gt=0, description="bytes")
    sha256: str
    priority: Literal["pinned", "normal"] = "normal"
    language: str = "fr"
    valid_until: str | None = Field(default=None, description="YYYY-MM-DD; dropped after")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        v = v.lower()
        if not _SHA256_RE.match(v):
            raise ValueError("expected 64 hex digits")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        url_parts(v, ("http", "https"), "http(s)://host/path")
        return v

    @field_validator("valid_until")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d{4}-\d{2}-\d{2}$", v):
            raise ValueError("expected YYYY-MM-DD")
        return v


class ContentSettings(Strict):
    budget_mb: int = Field(default=20_000, ge=0)
    sync_window: str = "22:00-06:00"
    bandwidth_kbit: int = Field(default=2_000, gt=0)
    usb_import_dir: Path | None = None
    serve_port: int = Field(default=8081, ge=1, le=65535, description="static file server")
    items: list[ContentItem] = Field(default_factory=list, description="this hub's manifest")

    @field_validator("items")
    @classmethod
    def _unique(cls, v: list[ContentItem]) -> list[ContentItem]:
        ids = [i.id for i in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate content ids: {dup}")
        return v

    @field_validator("sync_window")
    @classmethod
    def _window(cls, v: str) -> str:
        if not _WINDOW_RE.match(v):
            raise ValueError("expected HH:MM-HH:MM (local time)")
        return v
