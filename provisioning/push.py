"""`hubctl push`: render, validate, version, sign and publish configs; watch the reports.

Everything is rendered and validated for every targeted hub before the first message is
published: one invalid hub refuses the whole push. Each hub's new version is recorded in
the registry before its envelope is published (retained, QoS 1) to
``relais/hubs/<id>/config/desired``, so versions only ever go up, even across failures.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub_agent.config import ConfigError, parse_yaml
from hub_agent.mqtt.client import Client
from hub_agent.signing import SigningKey, sign_envelope
from provisioning import pushplan, registry, topics
from provisioning.content_catalogue import manifest_for
from provisioning.credentials import from_secret
from provisioning.hubdoc import Identity, Trust, base_document, forced_fields, redacted
from provisioning.pushplan import HubView, PushError, Rendered
from provisioning.statedir import StateDir
from provisioning.storage import Database
from provisioning.vouchers import voucher_secret


def view_of(row: dict[str, Any]) -> HubView:
    return HubView(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        region=row.get("region"),
        prefecture=row.get("prefecture"),
        groups=tuple(registry.hub_groups(row)),
    )


def load_push_file(path: Path) -> pushplan.PushFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PushError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = parse_yaml(text, str(path))
    except ConfigError as e:
        raise PushError(str(e)) from None
    return pushplan.parse_push_file(data)


def prepare(
    state: StateDir,
    db: Database,
    pf: pushplan.PushFile,
    hub_id: str | None = None,
    group: str | None = None,
) -> list[Rendered]:
    """Render and validate every target's config (raises PushError, publishes nothing)."""
    rows = {r["id"]: r for r in registry.all_hubs(db) if r.get("cred_fingerprint")}
    if hub_id is not None:
        if hub_id not in rows:
            raise PushError(f"hub {hub_id}: not enrolled (run hubctl enroll first)")
        targets = [view_of(rows[hub_id])]
    else:
        targets = pushplan.select_targets([view_of(r) for r in rows.values()], group or "")
        if not targets:
            raise PushError(f"--group {group}: no enrolled hub matches")
    trust = Trust(state.public_key(), voucher_secret(state))
    bases, versions, forced = {}, {}, {}
    for hub in targets:
        creds = from_secret(hub.id, state.read_secret(hub.id))
        if creds is None:
            raise PushError(f"hub {hub.id}: no broker credentials in the state dir (re-enroll)")
        bases[hub.id] = registry.latest_config(db, hub.id) or base_document()
        versions[hub.id] = registry.next_version(rows[hub.id])
        # Each hub gets its library manifest with its config (hubctl content assign).
        forced[hub.id] = forced_fields(
            Identity(hub.id, hub.kind),
            creds,
            trust,
            content=manifest_for(db, hub.id),
        )
    return pushplan.render_all(targets, bases, pf, versions, forced)


@dataclass
class Tracker:
    """Per hub: the version we wait for and its latest status, fed by config/reported."""

    expected: dict[str, int] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    reason: dict[str, str] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    on_change: Callable[[str, str, str], None] | None = None

    def expect(self, hub_id: str, version: int) -> None:
        with self.changed:
            self.expected[hub_id] = version
            self.status[hub_id] = "pending"

    def report(self, topic_name: str, payload: bytes, retained: bool) -> None:
        where = topics.parse(topic_name)
        if where is None or where[1] != "config/reported":
            return
        hub_id = where[0]
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        with self.changed:
            want = self.expected.get(hub_id)
            status = msg.get("status")
            if want is None or self.status.get(hub_id) != "pending":
                return
            if status not in ("applied", "rejected", "rolled_back"):
                return
            # Ours: the version we sent. A fresh (not retained) failure naming another
            # version is ours too: a hub that rolls back may report the version it kept.
            if msg.get("version") != want and (retained or status == "applied"):
                return
            self.status[hub_id] = str(status)
            self.reason[hub_id] = str(msg.get("reason") or "")
            self.changed.notify_all()
        if self.on_change is not None:
            self.on_change(hub_id, str(status), self.reason[hub_id])

    def wait(self, hub_ids: Sequence[str], deadline: float) -> None:
        with self.changed:
            while any(self.status[h] == "pending" for h in hub_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 0.5))
            for h in hub_ids:
                if self.status[h] == "pending":
                    self.status[h] = "timeout"


def publish(client: Client, key: SigningKey, rendered: Rendered) -> None:
    envelope = sign_envelope(key, rendered.hub_id, rendered.version, rendered.config.to_wire())
    client.publish(
        topics.desired(rendered.hub_id),
        json.dumps(envelope, separators=(",", ":")).encode(),
        qos=1,
        retain=True,
    )


@dataclass(frozen=True)
class PushResult:
    status: dict[str, str]
    reason: dict[str, str]
    halted_after_wave: int | None  # 1-based wave after which the rollout stopped
    waves: int
    not_pushed: list[str]

    @property
    def ok(self) -> bool:
        return not self.not_pushed and all(s == "applied" for s in self.status.values())


def push_with_tracker(
    state: StateDir,
    db: Database,
    client: Client,
    tracker: Tracker,
    rendered: list[Rendered],
    source: str,
    wave_pct: float | None = None,
    max_failures: int = 0,
    timeout_s: float = 120,
    out: Callable[[str], None] = print,
) -> PushResult:
    key = state.signing_key()
    by_id = {r.hub_id: r for r in rendered}
    waves = pushplan.plan_waves(sorted(by_id), wave_pct)
    halted: int | None = None
    for n, wave in enumerate(waves, start=1):
        if len(waves) > 1:
            out(f"wave {n}/{len(waves)}: {len(wave)} hub(s){' (canary)' if n == 1 else ''}")
        for hub_id in wave:
            r = by_id[hub_id]
            registry.record_desired(db, hub_id, r.version, redacted(r.config.to_wire()), source)
            rename_from_config(db, r)
            tracker.expect(hub_id, r.version)
            publish(client, key, r)
            out(f"  {hub_id:<32} v{r.version:<5} pending")
        tracker.wait(wave, time.monotonic() + timeout_s)
        done = {h: tracker.status[h] for h in tracker.expected}
        if n < len(waves) and not pushplan.may_continue(done, max_failures):
            halted = n
            break
    pushed = set(tracker.expected)
    return PushResult(
        status={h: tracker.status[h] for h in sorted(pushed)},
        reason={h: tracker.reason.get(h, "") for h in sorted(pushed)},
        halted_after_wave=halted,
        waves=len(waves),
        not_pushed=sorted(set(by_id) - pushed),
    )


def rename_from_config(db: Database, rendered: Rendered) -> bool:
    """A push that renames a hub (``hub.name``, region, prefecture) renames it in the
    registry too, so the fleet page and the next push's templates agree with the hub."""
    ident = rendered.config.hub
    cur = db.execute(
        "UPDATE hubs SET name = ?, region = ?, prefecture = ? WHERE id = ? AND"
        " (name <> ? OR coalesce(region, '') <> ? OR coalesce(prefecture, '') <> ?)",
        [ident.name, ident.region, ident.prefecture, rendered.hub_id,
         ident.name, ident.region or "", ident.prefecture or ""],
    )  # fmt: skip
    return bool(cur.rowcount)


def record_reports(db: Database, rendered: list[Rendered], result: PushResult) -> None:
    """Keep what push saw in the registry too (the controller may not be running)."""
    versions = {r.hub_id: r.version for r in rendered}
    for hub_id, status in result.status.items():
        if status in ("applied", "rejected", "rolled_back"):
            db.execute(
                "UPDATE hubs SET reported_version = CASE WHEN coalesce(reported_version, 0) > ?"
                " THEN reported_version ELSE ? END,"
                " reported_status = ?, reported_reason = ?, reported_ts = ? WHERE id = ?",
                [
                    versions[hub_id],
                    versions[hub_id],
                    status,
                    result.reason.get(hub_id) or None,
                    time.time(),
                    hub_id,
                ],
            )
