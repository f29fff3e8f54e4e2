"""MQTT topics of the contract (relais/hubs/{hub_id}/...) and their parsing."""

from __future__ import annotations

ROOT = "relais/hubs"
STREAMS = ("state", "health", "events", "config/reported")
SHARE_GROUP = "relais-ingest"


def topic(hub_id: str, stream: str) -> str:
    return f"{ROOT}/{hub_id}/{stream}"


def desired(hub_id: str) -> str:
    return topic(hub_id, "config/desired")


def reported(hub_id: str) -> str:
    return topic(hub_id, "config/reported")


def parse(topic_name: str) -> tuple[str, str] | None:
    """``relais/hubs/<id>/<stream>`` -> (id, stream) for the streams the controller reads."""
    prefix = ROOT + "/"
    if not topic_name.startswith(prefix):
        return None
    hub_id, _, stream = topic_name[len(prefix) :].partition("/")
    if not hub_id or stream not in STREAMS:
        return None
    return hub_id, stream


def ingest_filters(shared: bool) -> list[str]:
    """What the controller subscribes to.

    Shared: each health/event message goes to ONE controller of the group (MQTT 5
    ``$share``), so ingestion scales by adding processes. ``state`` and
    ``config/reported`` are retained and MQTT 5 never sends retained messages on a shared
    subscription, so every controller reads those (low volume, idempotent updates).
    """
    bulk = [f"{ROOT}/+/health", f"{ROOT}/+/events"]
    every = [f"{ROOT}/+/state", f"{ROOT}/+/config/reported"]
    if shared:
        bulk = [f"$share/{SHARE_GROUP}/{f}" for f in bulk]
    return bulk + every
