"""The hub's networks and who gets what on them: LAN and WAN, the walled garden and
zero-rated destinations, the staff's devices and guaranteed share."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, field_validator, model_validator

from hub_agent.config.base import Strict, normalise_mac

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

# Guaranteed share of the uplink reserved for the institution's own staff, per hub kind.
DEFAULT_STAFF_SHARE_PCT: dict[str, int] = {"mairie": 40, "clinic": 50, "school": 30}


class LanSettings(Strict):
    interface: str = Field(default="lan0", pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    address: ipaddress.IPv4Interface = ipaddress.IPv4Interface("10.42.0.1/24")
    address6: ipaddress.IPv6Interface | None = None
    dhcp_start: ipaddress.IPv4Address = ipaddress.IPv4Address("10.42.0.100")
    dhcp_end: ipaddress.IPv4Address = ipaddress.IPv4Address("10.42.0.250")
    lease_minutes: int = Field(default=60, ge=2, le=7 * 24 * 60)
    client_isolation: bool = True

    @model_validator(mode="after")
    def _range_in_subnet(self) -> LanSettings:
        net = self.address.network
        for name in ("dhcp_start", "dhcp_end"):
            if getattr(self, name) not in net:
                raise ValueError(f"{name} is outside {net}")
        if int(self.dhcp_start) > int(self.dhcp_end):
            raise ValueError("dhcp_start is after dhcp_end")
        return self


class WanSettings(Strict):
    interface: str = Field(default="wan0", pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    down_kbit: int = Field(default=20_000, gt=0, le=10_000_000, description="uplink capacity")
    up_kbit: int = Field(default=5_000, gt=0, le=10_000_000)
    probe_host: str = Field(default="198.51.100.1", description="latency/loss target")
    dns_servers: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = Field(
        default_factory=list, description="upstream resolvers; empty: from /etc/resolv.conf"
    )


class NetworkSettings(Strict):
    lan: LanSettings = LanSettings()
    wan: WanSettings = WanSettings()


def _check_domains(values: list[str]) -> list[str]:
    out = []
    for d in values:
        d = d.lower().rstrip(".")
        if not _DOMAIN_RE.match(d):
            raise ValueError(f"not a domain name: {d!r}")
        out.append(d)
    return out


class DestinationSet(Strict):
    """Destinations by domain (resolved addresses learned from the hub's resolver) and CIDR."""

    domains: list[str] = Field(default_factory=list)
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return _check_domains(v)


class StaffDevice(Strict):
    mac: str
    name: str = ""

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        return normalise_mac(v)


class StaffSettings(Strict):
    guaranteed_share_pct: int | None = Field(
        default=None, ge=0, le=90, description="None: the default for the hub's kind"
    )
    devices: list[StaffDevice] = Field(default_factory=list)
