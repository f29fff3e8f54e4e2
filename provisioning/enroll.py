"""`hubctl enroll`: a hub's identity, broker credentials, ACL, first config, host_vars.

Planning is pure (``render_acl``, ``host_vars``; the config document comes from
``provisioning.hubdoc``); ``enroll`` applies: registry row, password file entry
(``mosquitto_passwd -b``), ACL file, per-hub secret, host_vars for Ansible, and the first
config recorded as the hub's desired version.
Re-enrolling a hub rotates its broker password and caretaker password and bumps the
config version, so the freshly installed config wins over anything the hub had.
``rotate`` rotates the broker password of a running hub (``hubctl rotate``): the new one
goes into the hub's other broker user (``provisioning.credentials``), the old user stays
until ``retire`` once the hub says it uses the new one. Re-enrolling rotates the same way.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hub_agent.config import HubConfig
from provisioning import registry, topics
from provisioning.credentials import Credentials, from_secret, rotated, slot_users
from provisioning.geo import default_position
from provisioning.hubdoc import Identity, Trust, first_config, redacted
from provisioning.statedir import StateDir, write_private
from provisioning.storage import Database
from provisioning.vouchers import voucher_secret


class EnrollError(RuntimeError):
    pass


def fingerprint(secret: str) -> str:
    """What the registry keeps of a credential: enough to tell rotations apart, not to log in."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def hash_password(password: str) -> str:
    """The caretaker's hash in the portal's format (``scrypt$log2n$r$p$salt$hash``)."""
    try:
        from captive_portal.security import hash_password as portal_hash
    except ImportError:  # the portal not installed here: same format, same parameters
        salt = os.urandom(16)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=1 << 14, r=8, p=1, maxmem=64 << 20, dklen=32
        )
        b = base64.b64encode
        return f"scrypt$14$8$1${b(salt).decode()}${b(digest).decode()}"
    return portal_hash(password)


PAY_WRITE = ("request", "ack")  # relais/hubs/<id>/payments/..., docs/operations.md
PAY_READ = ("grant", "status")
BALANCE_WRITE, BALANCE_READ = "balances/query", "balances/answer"  # roaming (docs/operations.md)


def render_acl(hub_ids: Iterable[str], controller_user: str) -> str:
    """Mosquitto ACL: the controller reads and writes everything under relais/; each hub
    writes only its own four streams and reads only its own desired config. Per-hub rules
    (not ``%u`` patterns): both broker users of a hub (``credentials.slot_users``) get them."""
    lines = [
        "# Rendered by hubctl enroll from the registry; edits here are overwritten.",
        f"user {controller_user}",
        "topic readwrite relais/#",
        "topic readwrite $share/#",
        "",
    ]
    for hub_id in sorted(set(hub_ids)):
        rules = [f"topic write {topics.topic(hub_id, stream)}" for stream in topics.STREAMS]
        rules.append(f"topic read {topics.desired(hub_id)}")
        # mobile money: the hub asks and acknowledges; it reads only its own grants
        rules += [f"topic write {topics.topic(hub_id, f'payments/{x}')}" for x in PAY_WRITE]
        rules += [f"topic read {topics.topic(hub_id, f'payments/{x}')}" for x in PAY_READ]
        # roaming: the hub asks its own balance queries and reads only its own answers
        rules.append(f"topic write {topics.topic(hub_id, BALANCE_WRITE)}")
        rules.append(f"topic read {topics.topic(hub_id, BALANCE_READ)}")
        for user in slot_users(hub_id):
            lines += [f"user {user}", *rules, ""]
    return "\n".join(lines)


def host_vars(
    config: HubConfig, mqtt_url: str, creds: Credentials, public_key: str, admin_hash: str
) -> dict[str, Any]:
    """What the Ansible hub role consumes (documented in docs/operations.md)."""
    return {
        "relais_hub_id": config.hub.id,
        "relais_hub_kind": config.hub.kind,
        "relais_hub_name": config.hub.name,
        "relais_mqtt_url": mqtt_url,
        "relais_mqtt_username": creds.username,
        "relais_mqtt_password": creds.password,
        "relais_central_public_key": public_key,
        "relais_admin_password_hash": admin_hash,
        "relais_config_version": config.version,
        "relais_hub_config": config.to_wire(),
    }


@dataclass(frozen=True)
class Enrolled:
    hub_id: str
    version: int
    caretaker_password: str
    host_vars_path: Path
    rotated: bool


def _mosquitto_passwd(*args: str) -> None:
    try:
        subprocess.run(["mosquitto_passwd", *args], check=True, capture_output=True)
    except FileNotFoundError:
        raise EnrollError("mosquitto_passwd not found (install mosquitto)") from None
    except subprocess.CalledProcessError as e:
        # stderr of mosquitto_passwd never contains the password; stdout is not shown
        raise EnrollError(f"mosquitto_passwd failed: {e.stderr.decode(errors='replace')}") from None


def write_password(passwd: Path, user: str, password: str) -> None:
    if not passwd.exists():
        write_private(passwd, "")
    _mosquitto_passwd("-b", str(passwd), user, password)
    os.chmod(passwd, 0o600)


def delete_password(passwd: Path, user: str) -> bool:
    """Remove ``user`` from the broker's password file; False when it was not there."""
    if not passwd.exists():
        return False
    try:
        _mosquitto_passwd("-D", str(passwd), user)
    except EnrollError as e:
        if "not found in password file" in str(e):
            return False
        raise
    os.chmod(passwd, 0o600)
    return True


def reload_broker(command: Sequence[str] | None) -> bool:
    if not command:
        return False
    subprocess.run(list(command), check=True, capture_output=True)
    return True


def enroll(
    state: StateDir,
    db: Database,
    hub: registry.HubRecord,
    mqtt_url: str | None = None,
) -> Enrolled:
    state.ensure()
    settings = state.settings()
    url = mqtt_url or settings.hub_mqtt_url
    key = state.signing_key()  # created once, here, never copied anywhere
    ctl_user, ctl_password = state.controller_credentials()

    if hub.lat is None or hub.lon is None:
        lat, lon = default_position(hub.id, hub.region)
        hub = registry.HubRecord(**{**hub.__dict__, "lat": hub.lat or lat, "lon": hub.lon or lon})
    existing = registry.get_hub(db, hub.id)
    current = from_secret(hub.id, state.read_secret(hub.id)) if existing else None
    password = secrets.token_urlsafe(24)
    creds = rotated(hub.id, current, password)
    caretaker = secrets.token_urlsafe(9)
    admin_hash = hash_password(caretaker)
    version = registry.next_version(existing) if existing else 1
    identity = Identity(hub.id, hub.kind, hub.name, hub.region, hub.prefecture)
    trust = Trust(key.public_b64, voucher_secret(state))
    config = first_config(identity, version, url, creds, trust, admin_hash)

    # Credentials first: if anything below fails, re-running enroll rotates again.
    write_password(state.passwd_path, ctl_user, ctl_password)
    write_password(state.passwd_path, creds.username, password)
    state.write_secret(hub.id, creds.secret())
    registry.upsert_hub(db, hub, fingerprint(password))
    registry.record_desired(db, hub.id, version, redacted(config.to_wire()), "enroll")
    write_acl(state, db, ctl_user)
    hv_path = state.host_vars_path(hub.id)
    write_private(
        hv_path,
        yaml.safe_dump(
            host_vars(config, url, creds, key.public_b64, admin_hash),
            sort_keys=False,
            allow_unicode=True,
        ),
    )
    reload_broker(settings.broker_reload)
    return Enrolled(hub.id, version, caretaker, hv_path, existing is not None)


@dataclass(frozen=True)
class Removed:
    hub_id: str
    was_enrolled: bool
    credentials_revoked: bool


def remove(state: StateDir, db: Database, hub_id: str) -> Removed:
    """Decommission a hub (replaced, retired or stolen): its broker user goes first, so a
    box in the wrong hands cannot connect again; then the ACL, its secrets and host_vars,
    and its registry row and history. Safe to run again (each step tolerates "gone")."""
    state.ensure()
    ctl_user, _ = state.controller_credentials()
    revoked = [delete_password(state.passwd_path, user) for user in slot_users(hub_id)]
    was = registry.delete_hub(db, hub_id)
    write_acl(state, db, ctl_user)
    state.secret_path(hub_id).unlink(missing_ok=True)
    state.host_vars_path(hub_id).unlink(missing_ok=True)
    reload_broker(state.settings().broker_reload)
    return Removed(hub_id, was, any(revoked))


def write_acl(state: StateDir, db: Database, ctl_user: str) -> None:
    hub_ids = [r["id"] for r in registry.all_hubs(db) if r.get("cred_fingerprint")]
    write_private(state.acl_path, render_acl(hub_ids, ctl_user))


def rotate(state: StateDir, db: Database, hub_id: str) -> Credentials:
    """A new broker password for an enrolled hub, in its other broker user; the current
    user stays (the fallback) until ``retire``. The caller pushes the hub's config."""
    row = registry.get_hub(db, hub_id)
    current = from_secret(hub_id, state.read_secret(hub_id))
    if row is None or current is None:
        raise EnrollError(f"hub {hub_id}: not enrolled (run hubctl enroll first)")
    ctl_user, _ = state.controller_credentials()
    password = secrets.token_urlsafe(24)
    creds = rotated(hub_id, current, password)
    write_password(state.passwd_path, creds.username, password)
    state.write_secret(hub_id, creds.secret())
    db.execute("UPDATE hubs SET cred_fingerprint = ? WHERE id = ?", [fingerprint(password), hub_id])
    write_acl(state, db, ctl_user)
    reload_broker(state.settings().broker_reload)
    return creds


def retire(state: StateDir, hub_id: str) -> str | None:
    """Remove the hub's previous broker user (after the hub said it uses the new one);
    the user retired, or None when no rotation was pending."""
    creds = from_secret(hub_id, state.read_secret(hub_id))
    if creds is None or creds.previous is None:
        return None
    old = creds.previous[0]
    if old != creds.username:
        delete_password(state.passwd_path, old)
    state.write_secret(hub_id, creds.retired().secret())
    reload_broker(state.settings().broker_reload)
    return old
