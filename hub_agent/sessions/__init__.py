"""Plans, vouchers and quotas: who may use the uplink, how much, and for how long.

Pure deciders (``vouchers``, ``quota``, ``accounting``, ``states``: the session's state
machine) hold the rules; ``db`` holds the schema; ``service.SessionService`` is the thin
layer that reads and writes SQLite and hands grants to enforcement, joined from ``login``,
``metering`` (the accounting pass) and ``views`` over ``core``. ``interface.Sessions`` is
what the handler and mobile money need of it.
"""

from __future__ import annotations

from pathlib import Path


def db_path(data_dir: Path) -> Path:
    """The hub's one SQLite file (shared with the telemetry outbox, own migrations)."""
    return data_dir / "hub.db"
