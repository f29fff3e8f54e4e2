"""`hubctl`: central operations over the fleet.

Global options: ``--state DIR`` (the controller's data folder, env ``RELAIS_CENTRAL_DIR``,
default /var/lib/relais-central), ``--db URL`` (registry, env ``RELAIS_CENTRAL_DB``: a path,
``sqlite:///path`` or ``postgresql://...``; default ``<state>/registry.db``)
and ``--mqtt URL`` (the broker as the controller reaches it; env ``RELAIS_MQTT_URL``;
without credentials in the URL the controller's own broker user is used).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hub_agent.clikit import fail, parser
from hub_agent.mqtt.core import BrokerUrl, MqttError
from provisioning import content_cli, fleet, registry
from provisioning.statedir import StateDir
from provisioning.storage import Database

if TYPE_CHECKING:
    from provisioning.pushplan import PushFile


def build_parser() -> argparse.ArgumentParser:
    p = parser("hubctl", "Relais central operations: enroll, push, fleet, vouchers, content.")
    p.add_argument(
        "--db",
        default=os.environ.get("RELAIS_CENTRAL_DB") or None,
        metavar="URL",
        help="registry: path, sqlite:///path or postgresql://... (env RELAIS_CENTRAL_DB)",
    )
    p.add_argument(
        "--state",
        default=None,
        metavar="DIR",
        help="controller data dir (env RELAIS_CENTRAL_DIR, default /var/lib/relais-central)",
    )
    p.add_argument(
        "--mqtt",
        default=None,
        metavar="URL",
        help="broker URL for the controller (env RELAIS_MQTT_URL; else central.yaml)",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    enroll = sub.add_parser("enroll", help="enroll a hub (identity, broker credentials, ACL)")
    enroll.add_argument("hub_id")
    enroll.add_argument("--kind", required=True, choices=["mairie", "school", "clinic"])
    enroll.add_argument("--name", required=True)
    enroll.add_argument("--region", default=None)
    enroll.add_argument("--prefecture", default=None)
    enroll.add_argument("--lat", type=float, default=None)
    enroll.add_argument("--lon", type=float, default=None)
    enroll.add_argument(
        "--group", action="append", default=[], help="named group (repeatable), for push --group"
    )
    enroll.add_argument(
        "--hub-mqtt-url", default=None, help="broker URL as the hub reaches it (central.yaml)"
    )

    remove = sub.add_parser(
        "remove", help="decommission a hub: revoke its broker user, forget it, clear its topics"
    )
    remove.add_argument("hub_id")
    remove.add_argument(
        "--offline", action="store_true", help="skip clearing its retained topics on the broker"
    )

    rotate = sub.add_parser(
        "rotate", help="new broker password for a running hub; old user retired once unused"
    )
    rotate.add_argument("hub_id")
    rotate.add_argument("--retire", action="store_true", help="only retire a pending old user")
    rotate.add_argument("--timeout", type=float, default=120, help="seconds to wait for the hub")
    rotate.set_defaults(wave=None, dry_run=False, max_failures=0)

    push = sub.add_parser("push", help="push a config to a hub or a group")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("hub_id", nargs="?")
    target.add_argument(
        "--group", help="all | kind (schools) | region (Maritime) | named group | kind:/region:"
    )
    push.add_argument("file", type=Path)
    push.add_argument("--wave", default=None, help="staged rollout: canary share, e.g. 10%%")
    push.add_argument(
        "--max-failures", type=int, default=0, help="halt once rejections+rollbacks exceed this"
    )
    push.add_argument("--timeout", type=float, default=120, help="seconds to wait per wave")
    push.add_argument("--dry-run", action="store_true", help="render and validate only")

    fleet_p = sub.add_parser("fleet", help="fleet health table")
    fleet_p.add_argument("--json", action="store_true")

    vouchers = sub.add_parser("vouchers", help="centrally issued vouchers")
    vsub = vouchers.add_subparsers(dest="vverb", required=True, metavar="VERB")
    issue = vsub.add_parser(
        "issue", help="codes any hub verifies offline, and A4 sheets of cards (--out)"
    )
    issue.add_argument("--plan", required=True)
    issue.add_argument("--count", type=int, required=True)
    issue.add_argument(
        "--out", type=Path, default=None, help="sheet.pdf; split into sheet-001.pdf, ... if big"
    )
    issue.add_argument(
        "--per-pdf", type=int, default=1000, help="cards per PDF file (default 1000)"
    )
    findings = vsub.add_parser(
        "findings", help="codes redeemed beyond their devices, or never issued (exit 1 if any)"
    )
    findings.add_argument("--json", action="store_true")

    plan = sub.add_parser("plan", help="edit one plan of a hub or group (a push)")
    plsub = plan.add_subparsers(dest="plverb", required=True, metavar="VERB")
    pset = plsub.add_parser(
        "set", help="set keys of one plan (others untouched) and push: plan set HUB jour key=value"
    )
    pset.add_argument("target", metavar="HUB_OR_GROUP", help="a hub id, or a --group value")
    pset.add_argument("plan_id", metavar="PLAN_ID")
    pset.add_argument(
        "settings", nargs="+", metavar="KEY=VALUE", help="YAML values; name.fr=... for nested"
    )
    pset.add_argument("--wave", default=None)
    pset.add_argument("--max-failures", type=int, default=0)
    pset.add_argument("--timeout", type=float, default=120)
    pset.add_argument("--dry-run", action="store_true", help="render and validate only")

    content = sub.add_parser("content", help="content library catalogue")
    content_cli.register(content.add_subparsers(dest="cverb", required=True, metavar="VERB"))

    payments = sub.add_parser("payments", help="mobile money: purchases, service, simulator")
    from provisioning.payments import cli as payments_cli

    payments_cli.register(payments.add_subparsers(dest="pverb", required=True, metavar="VERB"))

    controller = sub.add_parser("controller", help="central controller")
    ctsub = controller.add_subparsers(dest="ctverb", required=True, metavar="VERB")
    run = ctsub.add_parser("run", help="health ingest and fleet web page")
    run.add_argument("--http-host", default="127.0.0.1")
    run.add_argument("--http-port", type=int, default=8090, help="0: no web page")
    run.add_argument(
        "--shared", action="store_true", help="MQTT 5 shared subscription (several processes)"
    )
    run.add_argument("--client-id", default=None)

    db_p = sub.add_parser("db", help="the registry database: migrate, copy to PostgreSQL")
    dbsub = db_p.add_subparsers(dest="dbverb", required=True, metavar="VERB")
    dbsub.add_parser("migrate", help="create or upgrade the registry at --db")
    copy_p = dbsub.add_parser("copy", help="copy a registry into a fresh one, verified")
    copy_p.add_argument("source", metavar="SQLITE_URL")
    copy_p.add_argument("target", metavar="POSTGRES_URL")

    sim = sub.add_parser("simulate", help="simulated hubs against a real broker")
    sim.add_argument("--hubs", type=int, default=50)
    sim.add_argument("--rate", type=float, default=1.0, help="health samples per hub per second")
    sim.add_argument("--duration", type=float, default=0, help="seconds (0: until Ctrl-C)")
    sim.add_argument("--connections", type=int, default=0, help="0: one per 100 hubs")
    sim.add_argument("--outage-pct", type=float, default=5.0, help="hubs that drop out")
    sim.add_argument("--register", action="store_true", help="add the hubs to the registry")
    return p


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state = StateDir.from_env(args.state)
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            try:
                path = registry.db_path_from_url(self.args.db, self.state.registry_path)
            except ValueError as e:
                fail(str(e))
            self.state.ensure()
            self._db = registry.open_registry(path)
        return self._db

    def broker_url(self) -> BrokerUrl:
        text = (
            self.args.mqtt
            or os.environ.get("RELAIS_MQTT_URL")
            or self.state.settings().controller_mqtt_url
        )
        user, password = self.state.controller_credentials()
        return BrokerUrl.parse(text).with_credentials(user, password)


def cmd_enroll(ctx: Ctx) -> int:
    from hub_agent.config import ConfigError
    from provisioning.enroll import EnrollError, enroll

    a = ctx.args
    hub = registry.HubRecord(
        id=a.hub_id,
        kind=a.kind,
        name=a.name,
        region=a.region,
        prefecture=a.prefecture,
        lat=a.lat,
        lon=a.lon,
        groups=tuple(a.group),
    )
    try:
        done = enroll(ctx.state, ctx.db, hub, mqtt_url=a.hub_mqtt_url)
    except (ConfigError, EnrollError, ValueError) as e:
        fail(f"enroll {a.hub_id}: {e}")
    verb = "re-enrolled (credentials rotated)" if done.rotated else "enrolled"
    print(f"{done.hub_id} {verb}; first config v{done.version}")
    print(f"Ansible host_vars: {done.host_vars_path}")
    print(f"Caretaker password (shown once): {done.caretaker_password}")
    return 0


def cmd_remove(ctx: Ctx) -> int:
    """Revoke first (local files, no broker needed), then clear the retained topics that
    held its signed config and state. Exit 1 when the broker part failed: run it again."""
    from hub_agent.mqtt.client import Client
    from provisioning import topics
    from provisioning.enroll import EnrollError, remove

    hub_id = ctx.args.hub_id
    try:
        done = remove(ctx.state, ctx.db, hub_id)
    except EnrollError as e:
        fail(f"remove {hub_id}: {e}")
    what = "removed" if done.was_enrolled else "not in the registry (already removed)"
    revoked = "broker user revoked" if done.credentials_revoked else "no broker user left"
    print(f"{hub_id} {what}; {revoked}; ACL rewritten")
    if ctx.args.offline:
        return 0
    client = Client(ctx.broker_url())
    try:
        client.connect()
        for stream in ("config/desired", "config/reported", "state"):
            client.publish(topics.topic(hub_id, stream), b"", retain=True)  # clears it
    except MqttError as e:
        print(f"retained topics of {hub_id} not cleared: {e} (run again)", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"retained config and state of {hub_id} cleared on the broker")
    return 0


def cmd_rotate(ctx: Ctx) -> int:
    from provisioning.rotation import cmd_rotate as rotate

    return rotate(ctx, run_push)


def cmd_push(ctx: Ctx) -> int:
    from provisioning import push, pushplan

    a = ctx.args
    try:
        pf = push.load_push_file(a.file)
    except pushplan.PushError as e:
        fail(f"push refused, nothing published: {e}")
    return run_push(ctx, pf, a.hub_id, a.group, str(a.file))


def cmd_plan(ctx: Ctx) -> int:
    """``hubctl plan set HUB_OR_GROUP PLAN_ID key=value...``: a push whose only layer edits
    one plan by id (``pushplan.merge_plans``); every other plan and setting stays."""
    from provisioning import pushplan

    a = ctx.args
    try:
        change = pushplan.parse_settings(a.settings)
    except pushplan.PushError as e:
        fail(f"plan set: {e}")
    pf = pushplan.PushFile(defaults={"plans": {a.plan_id: change}})
    enrolled = registry.get_hub(ctx.db, a.target) is not None
    hub_id, group = (a.target, None) if enrolled else (None, a.target)
    source = f"hubctl plan set {a.target} {a.plan_id} {' '.join(a.settings)}"
    return run_push(ctx, pf, hub_id, group, source)


def run_push(ctx: Ctx, pf: PushFile, hub_id: str | None, group: str | None, source: str) -> int:
    from hub_agent.mqtt.client import Client
    from provisioning import push, pushplan, topics

    a = ctx.args
    try:
        wave = pushplan.parse_wave(a.wave) if a.wave else None
        rendered = push.prepare(ctx.state, ctx.db, pf, hub_id=hub_id, group=group)
    except pushplan.PushError as e:
        fail(f"push refused, nothing published: {e}")
    print(f"{len(rendered)} hub(s) rendered and valid")
    if a.dry_run:
        for r in rendered:
            print(f"  {r.hub_id:<32} v{r.version:<5} layers: {', '.join(r.layers) or '-'}")
        return 0

    def show(hub_id: str, status: str, reason: str) -> None:
        print(f"  {hub_id:<32} {status}{': ' + reason if reason else ''}", flush=True)

    tracker = push.Tracker(on_change=show)
    client = Client(ctx.broker_url(), on_message=tracker.report)
    try:
        client.connect()
        client.subscribe([f"{topics.ROOT}/+/config/reported"])
        result = push.push_with_tracker(
            ctx.state,
            ctx.db,
            client,
            tracker,
            rendered,
            source=source,
            wave_pct=wave,
            max_failures=a.max_failures,
            timeout_s=a.timeout,
            out=lambda line: print(line, flush=True),
        )
    except MqttError as e:
        fail(f"push: {e}")
    finally:
        client.close()
    push.record_reports(ctx.db, rendered, result)
    counts: dict[str, int] = {}
    for s in result.status.values():
        counts[s] = counts.get(s, 0) + 1
    print("summary: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for hub_id, s in result.status.items():
        if s != "applied":
            print(f"  {hub_id}: {s}{': ' + result.reason[hub_id] if result.reason[hub_id] else ''}")
    if result.halted_after_wave is not None:
        print(
            f"rollout HALTED after wave {result.halted_after_wave}/{result.waves}: "
            f"failures exceeded --max-failures {a.max_failures}; "
            f"{len(result.not_pushed)} hub(s) not pushed (first: {result.not_pushed[0]})"
        )
    return 0 if result.ok else 1


def cmd_fleet(ctx: Ctx) -> int:
    if ctx.args.db is None and not ctx.state.registry_path.exists():
        fail(
            f"no registry at {ctx.state.registry_path} (nothing created): give --state DIR, "
            "set RELAIS_CENTRAL_DIR, or --db URL"
        )
    now = time.time()
    rows = fleet.fleet_rows(registry.all_hubs(ctx.db), now)
    if ctx.args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
    else:
        print(fleet.render_table(rows, now))
    return 0


def cmd_vouchers(ctx: Ctx) -> int:
    from provisioning import vouchers

    a = ctx.args
    if a.vverb == "findings":
        return vouchers.findings_command(ctx.db, as_json=a.json)
    return vouchers.issue_command(
        state=ctx.state, db=ctx.db, plan=a.plan, count=a.count, out=a.out, per_pdf=a.per_pdf
    )


def cmd_content(ctx: Ctx) -> int:
    return int(ctx.args.func(ctx.args) or 0)


def cmd_payments(ctx: Ctx) -> int:
    return int(ctx.args.func(ctx) or 0)


def cmd_controller(ctx: Ctx) -> int:
    from provisioning.controller.service import run_controller

    a = ctx.args
    return run_controller(
        ctx.state,
        ctx.db,
        ctx.broker_url(),
        http=(a.http_host, a.http_port) if a.http_port else None,
        shared=a.shared,
        client_id=a.client_id,
    )


def cmd_simulate(ctx: Ctx) -> int:
    from provisioning.simulate import simulate_command

    a = ctx.args
    return simulate_command(
        ctx.broker_url(),
        hubs=a.hubs,
        rate=a.rate,
        duration=a.duration,
        connections=a.connections,
        outage_pct=a.outage_pct,
        db=ctx.db if a.register else None,
    )


def cmd_db(ctx: Ctx) -> int:
    from provisioning import dbcopy

    a = ctx.args
    if a.dbverb == "copy":
        return dbcopy.copy_command(a.source, a.target)
    try:
        url = registry.db_path_from_url(a.db, ctx.state.registry_path)
    except ValueError as e:
        fail(str(e))
    if url == str(ctx.state.registry_path):
        ctx.state.ensure()
    return dbcopy.migrate_command(url)


VERBS = {
    "enroll": cmd_enroll,
    "remove": cmd_remove,
    "rotate": cmd_rotate,
    "push": cmd_push,
    "plan": cmd_plan,
    "fleet": cmd_fleet,
    "vouchers": cmd_vouchers,
    "content": cmd_content,
    "controller": cmd_controller,
    "payments": cmd_payments,
    "simulate": cmd_simulate,
    "db": cmd_db,
}


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(VERBS[args.verb](Ctx(args)))


if __name__ == "__main__":
    main()
