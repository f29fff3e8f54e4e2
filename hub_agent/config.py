"""The hub configuration: one validated, versioned document.

The same model validates a config read from disk (``hub-agent run --config``), a config
received over MQTT and a config rendered centrally by ``hubctl push``, so a document the
centre accepts is exactly one a hub accepts. Unknown keys are refused everywhere.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

HubKind = Literal["mairie", "school", "clinic"]
LoginMethod = Literal["voucher", "free", "account"]

# Guaranteed share of the uplink reserved for the institution's own staff, per hub kind.
DEFAULT_STAFF_SHARE_PCT: dict[str, int] = {"mairie": 40, "clinic": 50, "school": 30}

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


Localised = dict[str, str]


class HubContact(_Strict):
    """Who people call about this hub (every portal page and the dashboard show it)."""

    name: str = Field(default="", max_length=80, description="e.g. the caretaker's name")
    phone: str = Field(min_length=3, max_length=40, pattern=r"^\+?[0-9][0-9 .-]*$")
    hours: Localised = Field(default_factory=dict, description="{fr: ..., en: ...}")
    support_phone: str | None = Field(
        default=None, max_length=40, description="whom the caretaker calls when the uplink is down"
    )


class HubIdentity(_Strict):
    id: Ident = Field(description="stable hub id, e.g. tg-lome-mairie-01")
    kind: HubKind
    name: str = Field(min_length=1, max_length=120)
    region: str | None = None
    prefecture: str | None = None
    timezone: str = "Africa/Lome"
    contact: HubContact | None = None


class LanSettings(_Strict):
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


class WanSettings(_Strict):
    interface: str = Field(default="wan0", pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    down_kbit: int = Field(default=20_000, gt=0, le=10_000_000, description="uplink capacity")
    up_kbit: int = Field(default=5_000, gt=0, le=10_000_000)
    probe_host: str = Field(default="198.51.100.1", description="latency/loss target")
    dns_servers: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = Field(
        default_factory=list, description="upstream resolvers; empty: from /etc/resolv.conf"
    )


class NetworkSettings(_Strict):
    lan: LanSettings = LanSettings()
    wan: WanSettings = WanSettings()


class PortalSettings(_Strict):
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


class Plan(_Strict):
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


class FreeTier(_Strict):
    enabled: bool = True
    daily_mb: int = Field(default=100, gt=0)
    down_kbit: int = Field(default=1000, gt=0)
    up_kbit: int = Field(default=512, gt=0)
    idle_timeout_min: int = Field(default=10, gt=0)


def _check_domains(values: list[str]) -> list[str]:
    out = []
    for d in values:
        d = d.lower().rstrip(".")
        if not _DOMAIN_RE.match(d):
            raise ValueError(f"not a domain name: {d!r}")
        out.append(d)
    return out


class DestinationSet(_Strict):
    """Destinations by domain (resolved addresses learned from the hub's resolver) and CIDR."""

    domains: list[str] = Field(default_factory=list)
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return _check_domains(v)


class StaffDevice(_Strict):
    mac: str
    name: str = ""

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        return normalise_mac(v)


class StaffSettings(_Strict):
    guaranteed_share_pct: int | None = Field(
        default=None, ge=0, le=90, description="None: the default for the hub's kind"
    )
    devices: list[StaffDevice] = Field(default_factory=list)


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ContentKind = Literal["video", "pdf", "zim", "html", "app"]


class ContentItem(_Strict):
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
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http(s)://host/path")
        return v

    @field_validator("valid_until")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d{4}-\d{2}-\d{2}$", v):
            raise ValueError("expected YYYY-MM-DD")
        return v


class ContentSettings(_Strict):
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


class MqttFallback(_Strict):
    """The broker user a hub had before a credential rotation (``hubctl rotate``): tried
    when the broker refuses the new one, until the centre retires it."""

    username: str = Field(min_length=1)
    password: SecretStr


class MqttSettings(_Strict):
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
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
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


class TrustSettings(_Strict):
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


class RadiusServer(_Strict):
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


class RadiusSettings(_Strict):
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


class RoamingSettings(_Strict):
    """Central codes' balances follow them between hubs (hub_agent/roaming.py)."""

    offline_share_pct: int = Field(
        default=25, ge=0, le=100,
        description="share of a central code's plan quota granted while the centre is unreachable",
    )  # fmt: skip
    query_timeout_ms: int = Field(default=200, ge=10, le=5000)  # the centre's answer at login
    report_every_s: float = Field(default=60.0, gt=0, le=3600)  # usage per code to the centre


class HubConfig(_Strict):
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


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def validate_config(data: Any, source: str = "config") -> HubConfig:
    """Validate a parsed document; raise ConfigError naming each bad field's path."""
    if not isinstance(data, Mapping):
        raise ConfigError([("(document)", "expected a mapping at the top level")], source)
    try:
        return HubConfig.model_validate(data)
    except ValidationError as e:
        problems = [(_path(err["loc"]), err["msg"]) for err in e.errors()]
        raise ConfigError(problems, source) from None


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """RELAIS_DATA_DIR and RELAIS_MQTT_URL override the document for any command."""
    data = dict(data)
    if env.get("RELAIS_DATA_DIR"):
        data["data_dir"] = env["RELAIS_DATA_DIR"]
    if env.get("RELAIS_MQTT_URL"):
        mqtt = dict(data.get("mqtt") or {})
        mqtt.pop("username", None)
        mqtt.pop("password", None)
        mqtt["url"] = env["RELAIS_MQTT_URL"]
        data["mqtt"] = mqtt
    return data


def parse_yaml(text: str, source: str = "config") -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        raise ConfigError([(where, f"invalid YAML: {getattr(e, 'problem', e)}")], source) from None


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> HubConfig:
    """Read, override from the environment, and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([("(file)", f"cannot read {p}: {e.strerror}")], str(p)) from None
    data = parse_yaml(text, str(p))
    if not isinstance(data, Mapping):
        raise ConfigError([("(document)", "expected a mapping at the top level")], str(p))
    data = apply_env_overrides(dict(data), os.environ if env is None else env)
    return validate_config(data, str(p))
