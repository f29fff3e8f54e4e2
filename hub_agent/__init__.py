"""Relais hub agent: enforcement, accounting, telemetry, config sync and content cache."""

__version__ = "0.1.0"
