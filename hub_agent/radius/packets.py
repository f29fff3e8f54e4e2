"""RADIUS packets through pyrad: the shipped dictionary and the attributes a hub sends.

The builders here are pure (attribute lists from plain data) so the exact attributes of an
Access-Request or an Accounting-Request are unit-tested without a network.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrad import packet as rp
from pyrad.dictionary import Dictionary

from hub_agent.config import HubConfig, RadiusServer

DICTIONARY = Path(__file__).with_name("dictionary")

NAS_PORT_TYPE_WIRELESS = "Wireless-802.11"  # RFC 2865 5.41: hotspot access over Wi-Fi
SERVICE_TYPE_LOGIN = "Login-User"  # what hotspot NASes (CoovaChilli) send for web logins

AttrList = list[tuple[str, Any]]


@functools.cache
def dictionary() -> Dictionary:
    """FreeRADIUS' RFC, WISPr and ChilliSpot dictionaries, parsed once per process."""
    return Dictionary(str(DICTIONARY))


def secret_of(server: RadiusServer) -> bytes:
    return server.secret.get_secret_value().encode()


def station_mac(mac: str) -> str:
    """RFC 3580 3.21: Calling-Station-Id is the MAC as ``AA-BB-CC-DD-EE-FF``."""
    return mac.replace(":", "-").upper()


def new_session_id(now: float | None = None) -> str:
    """An Acct-Session-Id unique on this hub (RFC 2866 5.5): start time and randomness."""
    return f"{int(time.time() if now is None else now):08X}-{secrets.token_hex(4).upper()}"


@dataclass(frozen=True)
class Nas:
    """How this hub names itself to the AAA server."""

    identifier: str  # NAS-Identifier
    called_station_id: str
    location_id: str | None
    location_name: str | None

    @classmethod
    def from_config(cls, config: HubConfig) -> Nas:
        r = config.radius
        if r is None:
            raise ValueError("the config has no radius section")
        return cls(
            identifier=r.nas_identifier or config.hub.id,
            called_station_id=r.called_station_id or config.hub.id,
            location_id=r.location_id,
            location_name=r.location_name or config.hub.name,
        )

    def attrs(self) -> AttrList:
        out: AttrList = [
            ("NAS-Identifier", self.identifier),
            ("Called-Station-Id", self.called_station_id),
            ("NAS-Port-Type", NAS_PORT_TYPE_WIRELESS),
        ]
        if self.location_id:
            out.append(("WISPr-Location-ID", self.location_id))
        if self.location_name:
            out.append(("WISPr-Location-Name", self.location_name))
        return out


def access_request_attrs(
    nas: Nas, username: str, mac: str, ip: str | None, session_id: str
) -> AttrList:
    """Everything but the password (which is hidden per server) of an Access-Request."""
    out: AttrList = [
        ("User-Name", username),
        ("Service-Type", SERVICE_TYPE_LOGIN),
        *nas.attrs(),
        ("Calling-Station-Id", station_mac(mac)),
        ("Acct-Session-Id", session_id),  # CoovaChilli does this: links auth and accounting
    ]
    if ip:
        out.append(("Framed-IP-Address", ip))
    return out


def auth_packet(attrs: AttrList, password: str, secret: bytes) -> rp.AuthPacket:
    """An Access-Request with PAP and a Message-Authenticator (BlastRADIUS, CVE-2024-3596)."""
    pkt = rp.AuthPacket(code=rp.AccessRequest, secret=secret, dict=dictionary())
    pkt.add_message_authenticator()  # also creates the Request Authenticator PAP needs
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    pkt["User-Password"] = pkt.PwCrypt(password)
    return pkt


def acct_packet(attrs: AttrList, secret: bytes) -> rp.AcctPacket:
    pkt = rp.AcctPacket(code=rp.AccountingRequest, secret=secret, dict=dictionary())
    for name, value in attrs:
        pkt.AddAttribute(name, value)
    return pkt


def as_attrs(pkt: rp.Packet) -> dict[str, list[Any]]:
    """A decoded packet as {name: [values]}; attributes not in the dictionary are left out."""
    out: dict[str, list[Any]] = {}
    for key in pkt.keys():  # noqa: SIM118 - pyrad's keys() decodes names, iter does not
        if isinstance(key, str) and key != "Message-Authenticator":
            out[key] = list(pkt[key])
    return out


def unknown_attrs(pkt: rp.Packet) -> Sequence[object]:
    """Attribute codes the dictionary does not know (kept raw by pyrad)."""
    return [k for k in pkt.keys() if not isinstance(k, str)]  # noqa: SIM118 - as above
