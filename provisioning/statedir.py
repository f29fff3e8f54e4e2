"""The controller's data folder: registry, signing key, broker files, per-hub secrets.

Layout under ``RELAIS_CENTRAL_DIR`` (default ``/var/lib/relais-central``), mode 0700::

    registry.db               the registry (SQLite, WAL) unless --db says otherwise
    signing/central.key       Ed25519 private key (0600): signs configs, never leaves here
    signing/central.pub       its public key (base64), handed to every hub
    mosquitto/passwd          broker password file (mosquitto_passwd format, 0600)
    mosquitto/acl             broker ACL, rendered from the registry
    secrets/<hub>.json        the hub's broker password (0600), re-sent inside each config
    secrets/controller.json   the controller's own broker credentials (0600)
    ansible/host_vars/<hub>.yml  what Ansible needs to install the hub (0600: has secrets)
    central.yaml              optional settings (hub-facing MQTT URL, broker reload command)
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hub_agent.signing import SigningKey

DEFAULT_DIR = Path("/var/lib/relais-central")
CONTROLLER_USER = "relais-central"


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Settings:
    """``central.yaml``: what the controller tells hubs and how it reloads the broker."""

    hub_mqtt_url: str = "mqtt://localhost:1883"
    controller_mqtt_url: str = "mqtt://localhost:1883"
    broker_reload: list[str] | None = None  # e.g. ["systemctl", "reload", "mosquitto"]


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def from_env(cls, explicit: str | Path | None, env: dict[str, str] | None = None) -> StateDir:
        env = dict(os.environ) if env is None else env
        root = explicit or env.get("RELAIS_CENTRAL_DIR") or DEFAULT_DIR
        return cls(Path(root))

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.db"

    @property
    def key_path(self) -> Path:
        return self.root / "signing" / "central.key"

    @property
    def public_key_path(self) -> Path:
        return self.root / "signing" / "central.pub"

    @property
    def passwd_path(self) -> Path:
        return self.root / "mosquitto" / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.root / "mosquitto" / "acl"

    def host_vars_path(self, hub_id: str) -> Path:
        return self.root / "ansible" / "host_vars" / f"{hub_id}.yml"

    def secret_path(self, name: str) -> Path:
        return self.root / "secrets" / f"{name}.json"

    def settings(self) -> Settings:
        p = self.root / "central.yaml"
        if not p.exists():
            return Settings()
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a mapping")
        known = {"hub_mqtt_url", "controller_mqtt_url", "broker_reload"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{p}: unknown keys {sorted(unknown)}")
        return Settings(**data)

    def signing_key(self) -> SigningKey:
        """The central key: created once (0600), then always loaded from disk."""
        if self.key_path.exists():
            return SigningKey.load(self.key_path)
        self.ensure()
        self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = SigningKey.generate()
        key.save(self.key_path)  # O_EXCL: two racing enrolls cannot both create a key
        self.public_key_path.write_text(key.public_b64 + "\n")
        return key

    def public_key(self) -> str:
        return self.signing_key().public_b64

    def read_secret(self, name: str) -> dict[str, Any] | None:
        p = self.secret_path(name)
        if not p.exists():
            return None
        data = json.loads(p.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None

    def write_secret(self, name: str, data: dict[str, Any]) -> None:
        write_private(self.secret_path(name), json.dumps(data, sort_keys=True) + "\n")

    def controller_credentials(self) -> tuple[str, str]:
        """The controller's broker user: created on first use, stable afterwards."""
        data = self.read_secret("controller")
        if data is None:
            data = {"username": CONTROLLER_USER, "password": secrets.token_urlsafe(24)}
            self.write_secret("controller", data)
        return str(data["username"]), str(data["password"])
