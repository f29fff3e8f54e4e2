"""The portal's copy of the active config: written by the agent, read by the portal.

The centre's pushes reach the agent only; the portal (another, unprivileged process) must
still show the plans, prices, names and terms that the agent enforces. On start and after
every applied config the agent writes the config beside its socket (the runtime directory
the portal's group can already reach), without the secrets the portal has no use for (the
broker password, the deployment's voucher key). The portal re-reads it when it changes.
"""

from __future__ import annotations

import contextlib
import grp
import os
from pathlib import Path
from typing import Any

from hub_agent.config import HubConfig
from hub_agent.telemetry.files import write_json

PORTAL_GROUP = "relais-portal"


def portal_view_path(config: HubConfig) -> Path:
    return config.portal.agent_socket.parent / "portal-config.json"


def _listeners(config: HubConfig) -> dict[str, object]:
    p, lan6 = config.portal, config.network.lan.address6
    return {
        "network.lan.address": config.network.lan.address.ip,
        "network.lan.address6": None if lan6 is None else lan6.ip,
        "portal.http_port": p.http_port,
        "portal.https_port": p.https_port,
        "portal.tls_cert": p.tls_cert,
        "portal.tls_key": p.tls_key,
    }


def listen_changes(old: HubConfig, new: HubConfig) -> tuple[str, ...]:
    """The fields that move the portal's listeners from ``old`` to ``new`` (the agent waits
    for the portal's word on them; the portal re-binds for them)."""
    before, after = _listeners(old), _listeners(new)
    return tuple(k for k, v in after.items() if before[k] != v)


def portal_view(config: HubConfig) -> dict[str, Any]:
    data = config.to_wire()
    data["mqtt"].pop("password", None)
    data["trust"].pop("voucher_secret", None)
    # RADIUS secrets are required fields: masked, so the portal still validates the view
    radius = data.get("radius") or {}
    for name in ("primary", "secondary"):
        if radius.get(name):
            radius[name]["secret"] = "redacted"
    return data


def write_portal_view(config: HubConfig, group: str | None = PORTAL_GROUP) -> Path:
    path = portal_view_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a runtime copy (tmpfs): rewritten at every start, so no fsync needed
    write_json(path, portal_view(config), mode=0o640, durable=False)
    if group is not None:
        with contextlib.suppress(KeyError, PermissionError):
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
    return path
