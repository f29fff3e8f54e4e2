"""The portal's settings, derived from the hub config and validated once at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captive_portal.i18n import I18N_DIR, Languages, load_catalogue
from captive_portal.security import BadPasswordHash, parse_hash
from hub_agent.config import HubConfig


class SettingsError(ValueError):
    """The portal cannot start with this config; the message names the field."""


def _host_port(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    h = f"[{host}]" if ":" in host else host
    return h if port == default else f"{h}:{port}"


@dataclass(frozen=True)
class Settings:
    config: HubConfig
    agent_socket: Path
    languages: Languages
    base_url: str  # "http://10.42.0.1:8080/": where every redirect points
    secure_base_url: str | None  # the same over TLS when the hub has a certificate
    own_hosts: frozenset[str]  # Host header values that are the portal itself
    admin_hash: str | None
    agent_timeout_s: float = 2.0
    # the same on the LAN's IPv6 address, when the portal listens there too
    base_url6: str | None = None
    secure_base_url6: str | None = None

    @property
    def api_base_url(self) -> str:
        """RFC 8908 wants the API and portal over HTTPS when the hub can offer it."""
        return self.secure_base_url or self.base_url

    def splash_url(self, client_ip: str) -> str:
        """Where a captive device is sent: the portal's address in the family it asked in
        (a phone asking over IPv6 may have no IPv4 route to the hub at all)."""
        if self.base_url6 is not None and ":" in client_ip:
            return self.base_url6
        return self.base_url

    def api_url(self, client_ip: str) -> str:
        """``api_base_url`` in the family the device asked in."""
        if self.base_url6 is not None and ":" in client_ip:
            return self.secure_base_url6 or self.base_url6
        return self.api_base_url

    def is_own_host(self, host_header: str | None) -> bool:
        if not host_header:
            return True  # HTTP/1.0 without Host: cannot be a foreign site
        return host_header.lower() in self.own_hosts


def build_settings(
    config: HubConfig,
    *,
    extra_hosts: tuple[str, ...] = (),
    listen_port: int | None = None,
    ipv6: bool = True,
    i18n_dir: Path = I18N_DIR,
) -> Settings:
    """``ipv6``: the portal listens on ``network.lan.address6`` too (cli: no ``--host``)."""
    p = config.portal
    lan_ip = str(config.network.lan.address.ip)
    lan6 = config.network.lan.address6
    lan_ip6 = str(lan6.ip) if ipv6 and lan6 is not None else None
    http_port = listen_port or p.http_port
    base = f"http://{_host_port(lan_ip, http_port, 'http')}/"
    base6 = None if lan_ip6 is None else f"http://{_host_port(lan_ip6, http_port, 'http')}/"
    secure = secure6 = None
    if p.tls_cert is not None and p.tls_key is not None:
        for name, path in (("portal.tls_cert", p.tls_cert), ("portal.tls_key", p.tls_key)):
            if not path.is_file():
                raise SettingsError(f"{name}: {path} is not a readable file")
        if p.https_port is not None:
            secure = f"https://{_host_port(lan_ip, p.https_port, 'https')}/"
            if lan_ip6 is not None:
                secure6 = f"https://{_host_port(lan_ip6, p.https_port, 'https')}/"
    admin_hash = p.admin_password_hash
    if admin_hash is not None:
        try:
            parse_hash(admin_hash)
        except BadPasswordHash as e:
            raise SettingsError(f"portal.admin_password_hash: {e}") from None
    try:
        catalogue = load_catalogue(i18n_dir)
    except ValueError as e:
        raise SettingsError(f"portal translations: {e}") from None
    hosts = {lan_ip, "localhost", "127.0.0.1", *extra_hosts}
    if config.network.lan.address6 is not None:
        hosts.add(f"[{config.network.lan.address6.ip}]")
    own: set[str] = set()
    for h in hosts:
        h = h.lower()
        own.add(h)
        for port in (80, 443, http_port, p.http_port, p.https_port):
            if port is not None:
                own.add(f"{h}:{port}")
    return Settings(
        config=config,
        agent_socket=p.agent_socket,
        languages=Languages.build(p.languages, p.default_language, catalogue),
        base_url=base,
        secure_base_url=secure,
        own_hosts=frozenset(own),
        admin_hash=admin_hash,
        base_url6=base6,
        secure_base_url6=secure6,
    )
