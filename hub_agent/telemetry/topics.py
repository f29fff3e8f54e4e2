"""Topic names, exactly as fixed in shared/CONTRACT.md (root ``relais/``)."""

from __future__ import annotations


def hub_root(hub_id: str) -> str:
    return f"relais/hubs/{hub_id}"


def state(hub_id: str) -> str:
    return f"{hub_root(hub_id)}/state"


def health(hub_id: str) -> str:
    return f"{hub_root(hub_id)}/health"


def events(hub_id: str) -> str:
    return f"{hub_root(hub_id)}/events"


def config_desired(hub_id: str) -> str:
    return f"{hub_root(hub_id)}/config/desired"


def config_reported(hub_id: str) -> str:
    return f"{hub_root(hub_id)}/config/reported"


def for_kind(hub_id: str, kind: str) -> str:
    """Outbox kind ("health" | "event") -> its topic."""
    return health(hub_id) if kind == "health" else events(hub_id)
