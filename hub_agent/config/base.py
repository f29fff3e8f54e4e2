"""What every section of the hub config shares: the strict model base, ids, MACs and
URLs, and the error a refused document raises."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import SplitResult, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _ident(v: str) -> str:
    if not _ID_RE.match(v):
        raise ValueError("lower-case letters, digits and '-', at most 63 characters")
    return v


# Ids of hubs, plans and library items: they end up in topics, file names and URLs.
Ident = Annotated[str, AfterValidator(_ident)]


class ConfigError(ValueError):
    """A config was refused. ``problems`` holds (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = "; ".join(f"{path}: {msg}" for path, msg in problems)
        super().__init__(f"{source} refused: {lines}")


def normalise_mac(value: str) -> str:
    """Lower-case colon form; raises ValueError on anything that is not a unicast MAC."""
    mac = value.strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {value!r}")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"multicast MAC address: {value!r}")
    return mac


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


Localised = dict[str, str]


def url_parts(v: str, schemes: tuple[str, ...], expected: str) -> SplitResult:
    """``v`` split; ValueError("expected ...") unless its scheme is one of ``schemes`` and it
    names a host."""
    parts = urlsplit(v)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"expected {expected}")
    return parts
