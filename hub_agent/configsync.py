"""Signed configuration from the centre: verify, validate, store, apply, check, roll back.

The centre publishes a signed envelope (``hub_agent.signing``) retained on
``relais/hubs/{id}/config/desired``. For each one the hub:

1. decides (pure, ``decide``): JSON, signature by ``trust.central_public_key``, for this hub,
   version strictly above the applied one, schema-valid (``validate_config``, errors name
   the field path); an exact re-delivery of the applied envelope (reconnect, retained
   message), or of one this process already rolled back, is ignored silently;
2. applies it as one step through the integrator's ``apply(new)`` (firewall, shaping,
   portal, cache), then runs ``health_check()``; a new broker address or credentials
   must then be accepted by that broker (the link moves; the old one comes back if not);
3. on success stores it as the active config (the old one kept as previous), on failure
   re-applies the previous config (rollback) and keeps it active;
4. publishes retained ``config/reported`` ``{"version", "status", "reason", "ts"}`` and an
   event (``config_applied`` / ``config_rejected``; a rollback is ``config_rejected`` with
   ``status: rolled_back``).

Storage: ``{data_dir}/config/active.json`` and ``previous.json`` (the signed envelope and the
config's wire form, mode 0600 since it holds the MQTT password), ``last_result.json`` (the
last report). Each is written atomically (temp file, fsync, rename, fsync dir). A restart
resumes with ``load_active_config`` even when the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hub_agent.config import (
    ConfigError,
    HubConfig,
    apply_env_overrides,
    load_config,
    validate_config,
)
from hub_agent.signing import EnvelopeError, verify_envelope
from hub_agent.telemetry import topics
from hub_agent.telemetry.files import read_json, write_json

if TYPE_CHECKING:
    from hub_agent.mqtt.link import Message
    from hub_agent.telemetry.service import Telemetry

log = logging.getLogger(__name__)

Apply = Callable[[HubConfig], None]
HealthCheck = Callable[[], bool]
Status = Literal["applied", "rejected", "rolled_back"]


def config_dir(data_dir: Path) -> Path:
    return data_dir / "config"


# -- the decision (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    action: Literal["apply", "reject", "ignore"]
    version: int | None
    reason: str | None = None
    config: HubConfig | None = None
    envelope: dict[str, Any] | None = None


def decide(
    payload: bytes,
    *,
    hub_id: str,
    public_key: str | None,
    applied_version: int,
    applied_sig: str | None,
    rolled_back_sigs: frozenset[str] = frozenset(),
) -> Decision:
    """What to do with one ``config/desired`` payload; never raises."""
    try:
        envelope = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        return Decision("reject", None, f"envelope: not JSON ({e})")
    raw_version = envelope.get("version") if isinstance(envelope, dict) else None
    version = raw_version if isinstance(raw_version, int) else None
    if public_key is None:
        return Decision("reject", version, "trust.central_public_key: not set, cannot verify")
    try:
        verify_envelope(envelope, public_key, hub_id)
    except EnvelopeError as e:
        return Decision("reject", version, f"signature: {e}")
    assert isinstance(version, int)  # verify_envelope checked it
    if version == applied_version and envelope.get("sig") == applied_sig:
        return Decision("ignore", version)  # the applied envelope delivered again
    if envelope.get("sig") in rolled_back_sigs:
        # Already tried and undone; the retained copy comes again with every reconnect.
        return Decision("ignore", version)
    if version <= applied_version:
        return Decision(
            "reject", version, f"version: {version} is not above the applied {applied_version}"
        )
    try:
        config = validate_config(envelope["config"], source=f"config v{version}")
    except ConfigError as e:
        return Decision("reject", version, f"schema: {e}")
    if config.hub.id != hub_id:
        return Decision("reject", version, f"hub.id: {config.hub.id!r} is not this hub {hub_id!r}")
    return Decision("apply", version, None, config, envelope)


# -- storage ------------------------------------------------------------------------------


class ConfigStore:
    """The active and previous config as files; replaced atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = config_dir(data_dir)

    def _read(self, name: str) -> dict[str, Any] | None:
        data = read_json(self.dir / name)
        return data if isinstance(data, dict) else None

    def active(self) -> dict[str, Any] | None:
        return self._read("active.json")

    def previous(self) -> dict[str, Any] | None:
        return self._read("previous.json")

    def last_result(self) -> dict[str, Any] | None:
        return self._read("last_result.json")

    def commit(self, config: HubConfig, envelope: dict[str, Any] | None) -> None:
        """previous <- active, active <- new (each file replaced atomically, in that order)."""
        current = self.active()
        if current is not None:
            write_json(self.dir / "previous.json", current)
        write_json(
            self.dir / "active.json",
            {
                "version": config.version,
                "applied_at": round(time.time(), 3),
                "sig": None if envelope is None else envelope.get("sig"),
                "config": config.to_wire(),
            },
        )

    def save_result(self, report: dict[str, Any]) -> None:
        write_json(self.dir / "last_result.json", report, mode=0o644)


def load_active_config(
    data_dir: Path, fallback_path: Path, env: Mapping[str, str] | None = None
) -> HubConfig:
    """The config to start with: the last applied one, else (or if newer) the file on disk.

    Works without the broker. The environment overrides (``RELAIS_DATA_DIR``,
    ``RELAIS_MQTT_URL``) apply to the stored config as to the file.
    """
    env = os.environ if env is None else env
    stored = ConfigStore(data_dir).active()
    fallback: HubConfig | None = None
    try:
        fallback = load_config(fallback_path, env)
    except ConfigError:
        if stored is None:
            raise
    if stored is not None:
        try:
            active = validate_config(
                apply_env_overrides(dict(stored["config"]), env), f"{data_dir}/config/active.json"
            )
        except (ConfigError, KeyError, TypeError) as e:
            log.error("stored config unusable (%s); using %s", e, fallback_path)
        else:
            if fallback is None or active.version >= fallback.version:
                return active
    assert fallback is not None
    return fallback


# -- the sync loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    version: int | None
    status: Status
    reason: str | None
    ts: float

    def wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "reason": self.reason,
            "ts": self.ts,
        }


class ConfigSync:
    """Owns the running config. Wire it with ``ConfigSync(current, telemetry=..., apply=...,
    health_check=...)`` before ``telemetry.start()``."""

    def __init__(
        self,
        current: HubConfig,
        *,
        apply: Apply,
        health_check: HealthCheck = lambda: True,
        telemetry: Telemetry | None = None,
        data_dir: Path | None = None,
        broker_timeout_s: float = 30.0,
    ) -> None:
        self.current = current
        self.broker_timeout_s = broker_timeout_s
        self.apply_fn = apply
        self.health_check = health_check
        self.telemetry = telemetry
        self.store = ConfigStore(data_dir or current.data_dir)
        stored = self.store.active()
        self.applied_sig: str | None = (
            stored.get("sig") if stored and stored.get("version") == current.version else None
        )
        # Envelopes this process applied and undid: not retried until the agent restarts
        # (or the centre pushes a new version), so a config that fails, e.g. a broker
        # that refuses the hub, does not loop on each reconnect.
        self.rolled_back_sigs: set[str] = set()
        self._lock = asyncio.Lock()
        self.reports: list[Report] = []
        if telemetry is not None:
            telemetry.config_version = lambda: self.current.version
            telemetry.link.subscribe(topics.config_desired(current.hub.id), self.on_message)

    async def on_message(self, msg: Message) -> None:
        if msg.payload:  # an empty retained message clears the topic: nothing to apply
            await self.handle(msg.payload)

    async def handle(self, payload: bytes) -> Report | None:
        """Process one desired-config payload; return the report (None: ignored)."""
        async with self._lock:
            d = decide(
                payload,
                hub_id=self.current.hub.id,
                public_key=self.current.trust.central_public_key,
                applied_version=self.current.version,
                applied_sig=self.applied_sig,
                rolled_back_sigs=frozenset(self.rolled_back_sigs),
            )
            if d.action == "ignore":
                return None
            if d.action == "reject":
                log.warning("config v%s rejected: %s", d.version, d.reason)
                return self._report(d.version, "rejected", d.reason)
            assert d.config is not None
            return await self._apply(d.config, d.envelope)

    async def _apply(self, new: HubConfig, envelope: dict[str, Any] | None) -> Report:
        old = self.current
        problem: str | None = None
        try:
            await asyncio.to_thread(self.apply_fn, new)
        except Exception as e:
            problem = f"apply failed: {e}"
        else:
            try:
                healthy = await asyncio.to_thread(self.health_check)
            except Exception as e:
                healthy, problem = False, f"health check failed: {e}"
            if not healthy and problem is None:
                problem = "health check failed after apply"
        if problem is None and self.telemetry is not None:
            # Last, so a refused new broker only has the kernel part to undo; the report
            # then goes out over whichever link stands.
            problem = await self.telemetry.switch_broker(new, self.broker_timeout_s)
        if problem is not None:
            log.error("config v%d: %s; rolling back to v%d", new.version, problem, old.version)
            try:
                await asyncio.to_thread(self.apply_fn, old)
            except Exception as e:
                problem += f"; rollback to v{old.version} also failed: {e}"
            if envelope is not None and isinstance(envelope.get("sig"), str):
                self.rolled_back_sigs.add(envelope["sig"])
            return self._report(new.version, "rolled_back", problem)
        self.store.commit(new, envelope)
        self.current = new
        if self.telemetry is not None:
            self.telemetry.reconfigure(new)
            self.telemetry.link.refresh_state()  # the retained state names the new version
        self.applied_sig = None if envelope is None else envelope.get("sig")
        log.info("config v%d applied", new.version)
        return self._report(new.version, "applied", None)

    def _report(self, version: int | None, status: Status, reason: str | None) -> Report:
        report = Report(version, status, reason, round(time.time(), 3))
        self.reports.append(report)
        try:
            self.store.save_result(report.wire())
        except OSError as e:
            log.warning("cannot store the config result: %s", e)
        if self.telemetry is not None:
            hub = self.current.hub.id
            fut = self.telemetry.link.publish(
                topics.config_reported(hub), report.wire(), retain=True
            )
            fut.add_done_callback(_ignore_result)
            fields: dict[str, Any] = {"version": version, "status": status}
            if reason is not None:
                fields["reason"] = reason
            self.telemetry.events.emit(
                "config_applied" if status == "applied" else "config_rejected", **fields
            )
        return report


def _ignore_result(fut: asyncio.Future[None]) -> None:
    # The report is retained and stored; a lost ack only means the centre sees it later.
    if not fut.cancelled() and fut.exception() is not None:
        log.info("config report not acknowledged: %s", fut.exception())
