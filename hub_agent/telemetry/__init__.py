"""Telemetry: health samples and events through an SQLite outbox to MQTT (store-and-forward).

``mqtt`` wraps paho once; ``outbox`` is the crash-safe queue; ``health`` gathers a sample;
``events`` names the event types; ``service.Telemetry`` ties them together for the daemon.
"""

from pathlib import Path


def db_path(data_dir: Path) -> Path:
    """The hub's SQLite database (shared by every feature, one migration set each)."""
    return data_dir / "hub.db"


def telemetry_dir(data_dir: Path) -> Path:
    """Small files the running agent keeps for ``hub-agent status`` and the MQTT session."""
    return data_dir / "telemetry"
