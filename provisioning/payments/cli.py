"""``hubctl payments list|show|export|reconcile|run|simulator``.

``register(subparsers)`` adds the verbs (provisioning/cli.py calls it); each sets ``func``
to a handler called with hubctl's context (``.args``, ``.db``, ``.state``,
``.broker_url()``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from hub_agent.sessions.vouchers import format_code
from provisioning.payments import store
from provisioning.payments.store import Payment
from provisioning.statedir import StateDir
from provisioning.storage import Database

TZ = ZoneInfo("Africa/Lome")
CSV_COLUMNS = ("date", "hub", "plan", "amount", "network", "provider", "provider_reference",
               "operator_reference", "ref", "state")  # fmt: skip
SOLD = ("paid", "granted", "delivered")


class Ctx(Protocol):
    args: Any
    state: StateDir

    @property
    def db(self) -> Database: ...

    def broker_url(self) -> Any: ...


def register(subparsers: Any) -> None:
    lst = subparsers.add_parser("list", help="purchases, newest last")
    lst.add_argument("--hub", default=None)
    lst.add_argument("--state", dest="pstate", default=None, help="e.g. pending, delivered")
    lst.add_argument("--day", default=None, metavar="YYYY-MM-DD", help="local day (Lomé)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    show = subparsers.add_parser("show", help="one purchase and its history")
    show.add_argument("ref")
    show.set_defaults(func=cmd_show)

    exp = subparsers.add_parser("export", help="CSV for accounting")
    exp.add_argument("--day", default=None, metavar="YYYY-MM-DD")
    exp.add_argument("--month", default=None, metavar="YYYY-MM")
    exp.add_argument("--hub", default=None)
    exp.add_argument("--out", type=Path, default=None, help="file (default: stdout)")
    exp.set_defaults(func=cmd_export)

    rec = subparsers.add_parser("reconcile", help="check a day against the providers")
    rec.add_argument("--day", required=True, metavar="YYYY-MM-DD")
    rec.set_defaults(func=cmd_reconcile)

    run = subparsers.add_parser("run", help="the payment service (MQTT, callbacks, poller)")
    run.add_argument("--http-host", default="127.0.0.1")
    run.add_argument("--http-port", type=int, default=8091, help="0: no callback endpoint")
    run.add_argument("--client-id", default="relais-payments")
    run.set_defaults(func=cmd_run)

    sim = subparsers.add_parser("simulator", help="PayGate + FedaPay simulator (lab, demo)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8092)
    sim.add_argument("--paygate-token", default="sim-paygate-token")
    sim.add_argument("--fedapay-key", default="sk_sandbox_sim")
    sim.add_argument("--webhook-secret", default="wh_sandbox_sim")
    sim.add_argument("--paygate-callback", default="", metavar="URL")
    sim.add_argument("--fedapay-webhook", default="", metavar="URL")
    sim.set_defaults(func=cmd_simulator)


def day_bounds(day: str) -> tuple[float, float]:
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=TZ)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def month_bounds(month: str) -> tuple[float, float]:
    start = datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=TZ)
    nxt = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), nxt.timestamp()


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).strftime("%Y-%m-%d %H:%M:%S")


def masked(phone: str) -> str:
    return phone[:2] + "****" + phone[-2:]


def _select(ctx: Ctx, since_until: tuple[float, float] | None, state: str | None = None
            ) -> list[Payment]:  # fmt: skip
    store.MIGRATIONS.apply(ctx.db)
    since, until = since_until or (None, None)
    return store.select(ctx.db, ctx.args.hub, state, since, until)


def cmd_list(ctx: Ctx) -> int:
    a = ctx.args
    rows = _select(ctx, day_bounds(a.day) if a.day else None, a.pstate)
    if a.json:
        print(json.dumps([_public(p) for p in rows], indent=1))
        return 0
    for p in rows:
        print(f"{local(p.created_at)}  {p.ref}  {p.hub_id:<28} {p.plan_id:<8} {p.amount:>6} XOF"
              f"  {p.network:<6} {p.provider:<7} {p.state:<9} {p.reason}")  # fmt: skip
    print(f"{len(rows)} purchase(s); sold {sum(p.amount for p in rows if p.state in SOLD)} XOF")
    return 0


def _public(p: Payment) -> dict[str, Any]:
    return {"ref": p.ref, "hub": p.hub_id, "request_id": p.request_id, "plan": p.plan_id,
            "amount": p.amount, "currency": p.currency, "phone": masked(p.phone),
            "network": p.network, "provider": p.provider, "provider_reference": p.provider_ref,
            "operator_reference": p.payment_reference, "state": p.state, "reason": p.reason,
            "code": format_code(p.code), "created_at": p.created_at, "paid_at": p.paid_at,
            "paid_amount": p.paid_amount, "acked_at": p.acked_at}  # fmt: skip


def cmd_show(ctx: Ctx) -> int:
    store.MIGRATIONS.apply(ctx.db)
    p = store.get(ctx.db, ctx.args.ref)
    if p is None:
        print(f"no purchase {ctx.args.ref}", file=sys.stderr)
        return 1
    for k, v in _public(p).items():
        print(f"{k:>19}: {local(v) if k.endswith('_at') and v else v}")
    print("history:")
    for at, frm, to, event, detail in store.log(ctx.db, p.ref):
        print(f"  {local(at)}  {frm or '-':>9} -> {to:<9} {event:<12} {detail}")
    return 0


def export_csv(rows: list[Payment]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for p in rows:
        w.writerow([local(p.created_at), p.hub_id, p.plan_id, p.amount, p.network, p.provider,
                    p.provider_ref or "", p.payment_reference or "", p.ref, p.state])  # fmt: skip
    return buf.getvalue()


def cmd_export(ctx: Ctx) -> int:
    a = ctx.args
    if a.day and a.month:
        print("--day or --month, not both", file=sys.stderr)
        return 2
    bounds = day_bounds(a.day) if a.day else month_bounds(a.month) if a.month else None
    text = export_csv(_select(ctx, bounds))
    if a.out:
        a.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_reconcile(ctx: Ctx) -> int:
    """Ask the provider about every purchase of the day; apply what it says (a late
    payment gets its grant, which the running service sends); list what needs a person:
    amounts that differ, and codes redeemed on a hub although never paid. Exit 1 then."""
    from provisioning.payments.reconcile import reconcile_day
    from provisioning.payments.runner import PaymentsConfigError, build_service

    try:
        svc = build_service(ctx.state, ctx.db, lambda _t, _p: None)  # `run` sends grants
    except PaymentsConfigError as e:
        print(f"payments reconcile: {e}", file=sys.stderr)
        return 2
    try:
        report = reconcile_day(svc, *day_bounds(ctx.args.day))
    finally:
        svc.close()
    for line in report.lines:
        print(line)
    return 1 if report.problems else 0


def cmd_run(ctx: Ctx) -> int:
    from provisioning.payments.runner import PaymentsConfigError, run_service

    a = ctx.args
    http = (a.http_host, a.http_port) if a.http_port else None
    # Each payment's steps with their times: what ops read when a purchase is slow or lost.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return run_service(ctx.state, ctx.db, ctx.broker_url(), http, a.client_id)
    except PaymentsConfigError as e:
        print(f"payments run: {e}", file=sys.stderr)
        return 2


def cmd_simulator(ctx: Ctx) -> int:
    from provisioning.payments.simulator import SimConfig, run

    a = ctx.args
    cfg = SimConfig(a.paygate_token, a.fedapay_key, a.webhook_secret, a.paygate_callback,
                    a.fedapay_webhook)  # fmt: skip
    return run(cfg, a.host, a.port)
