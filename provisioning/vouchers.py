"""Central vouchers: issue batches any hub verifies offline, and reconcile redemptions.

The deployment's voucher secret lives in the controller's data folder
(``secrets/voucher.json``, 0600, created once) and goes to every hub inside its signed
config as ``trust.voucher_secret``. Codes carry their plan, serial and last valid month
under a truncated HMAC (see hub_agent/sessions/vouchers.py for the layout and the
trade-off). Hubs queue each device redemption of a central code and report it when online;
``reconcile`` records the reports and names the codes redeemed by more devices than they
allow (the same code sold twice, or used on two offline hubs) and codes that were never
issued (a forgery or a leaked secret).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hub_agent.config import Plan
from hub_agent.sessions.service import Redemption
from hub_agent.sessions.vouchers import (
    MONTHS,
    SERIALS,
    format_code,
    make_central_code,
    month_end,
    month_index,
)
from provisioning.hubdoc import base_document
from provisioning.statedir import StateDir
from provisioning.storage import Database, Migrations, transaction
from provisioning.voucher_sheet import Card, default_portal_url, render_sheet

VOUCHERS = Migrations("central_vouchers")
DEFAULT_VALID_MONTHS = 6
NETWORK_NAME = "Wi-Fi Relais"
TZ = "Africa/Lome"


@VOUCHERS
def m001_central_vouchers(db: Database) -> None:
    db.execute(
        """CREATE TABLE central_vouchers (
            code TEXT PRIMARY KEY,
            plan_id TEXT NOT NULL,
            month INTEGER NOT NULL,
            serial INTEGER NOT NULL,
            devices_max INTEGER NOT NULL,
            issued_at DOUBLE PRECISION NOT NULL,
            UNIQUE (plan_id, month, serial)
        )"""
    )
    db.execute(
        """CREATE TABLE central_redemptions (
            code TEXT NOT NULL,
            hub_id TEXT NOT NULL,
            mac TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            plan_id TEXT NOT NULL,
            PRIMARY KEY (code, hub_id, mac)
        )"""
    )


# --- the deployment secret ---------------------------------------------------------------
def secret_path(state: StateDir) -> Path:
    return state.secret_path("voucher")


def voucher_secret(state: StateDir) -> str:
    """The deployment's voucher key (base64, 32 random bytes): created once, 0600.

    ``hubctl enroll`` puts it in every hub's ``trust.voucher_secret``."""
    path = secret_path(state)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        try:  # O_EXCL: two racing commands cannot create two different keys
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps({"key": key}) + "\n")
                f.flush()
                os.fsync(f.fileno())
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data["key"])


# --- issuing -----------------------------------------------------------------------------
def catalogue() -> dict[str, Plan]:
    """The plans sold everywhere: those of the base config every hub starts from."""
    return {p["id"]: Plan.model_validate(p) for p in base_document().get("plans", [])}


@dataclass(frozen=True)
class Batch:
    plan: Plan
    month: int  # last month of validity
    codes: list[str]

    @property
    def expires_at(self) -> float:
        return month_end(self.month, TZ)


def issue_batch(
    db: Database,
    secret: str,
    plan: Plan,
    count: int,
    now: float | None = None,
    valid_months: int = DEFAULT_VALID_MONTHS,
) -> Batch:
    """``count`` new central codes for ``plan``, redeemable until the end of the month
    ``valid_months - 1`` months from now; serials continue from the last batch."""
    now = time.time() if now is None else now
    if not 1 <= count <= 100_000:
        raise ValueError(f"count: {count} outside 1..100000")
    if not 1 <= valid_months <= 60:
        raise ValueError(f"valid_months: {valid_months} outside 1..60")
    month = month_index(now, TZ) + valid_months - 1
    if month >= MONTHS:
        raise ValueError("valid_months: past the code format's last month (2046)")
    VOUCHERS.apply(db)
    key = secret.encode()
    with transaction(db):
        row = db.execute(
            "SELECT coalesce(max(serial) + 1, 0) FROM central_vouchers "
            "WHERE plan_id = ? AND month = ?",
            [plan.id, month],
        ).fetchone()
        first = int(row[0])
        if first + count > SERIALS:
            raise ValueError(
                f"count: only {SERIALS - first} serials left for plan {plan.id!r} in this "
                "month; use another --valid-months"
            )
        codes = [make_central_code(key, plan.id, month, s) for s in range(first, first + count)]
        db.executemany(
            "INSERT INTO central_vouchers (code, plan_id, month, serial, devices_max, "
            "issued_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (c, plan.id, month, first + i, plan.devices_per_voucher, now)
                for i, c in enumerate(codes)
            ],
        )
    return Batch(plan, month, codes)


def cards_for(batch: Batch, network: str = NETWORK_NAME, lang: str = "fr") -> list[Card]:
    plan = batch.plan
    until = time.strftime("%d/%m/%Y", time.gmtime(batch.expires_at - 1))
    devices = plan.devices_per_voucher
    detail = f"{devices} appareil{'s' if devices > 1 else ''} · à activer avant le {until}"
    name = plan.name.get(lang) or next(iter(plan.name.values()))
    url = default_portal_url()
    return [Card(network, name, plan.price_label, c, url, detail) for c in batch.codes]


# --- reconciliation ----------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    kind: Literal["over_redeemed", "never_issued"]
    code: str
    plan_id: str
    devices_max: int
    redemptions: tuple[tuple[str, str, float], ...]  # (hub_id, mac, at), oldest first

    @property
    def hubs(self) -> list[str]:
        return sorted({h for h, _, _ in self.redemptions})


def reconcile(db: Database, redemptions: Iterable[Redemption]) -> list[Finding]:
    """Record hubs' redemption reports (idempotent) and return the problems they reveal
    for the codes concerned: more devices than the voucher allows across all hubs, or a
    code the centre never issued."""
    VOUCHERS.apply(db)
    reports = list(redemptions)
    with transaction(db):
        db.executemany(
            "INSERT INTO central_redemptions (code, hub_id, mac, at, plan_id) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (code, hub_id, mac) DO NOTHING",
            [(r.code, r.hub_id, r.mac, r.at, r.plan_id) for r in reports],
        )
    return findings_for(db, sorted({r.code for r in reports}))


def findings_for(db: Database, codes: Iterable[str] | None = None) -> list[Finding]:
    """The problems recorded redemptions reveal, for ``codes`` (all redeemed codes when
    None): ``hubctl vouchers findings`` shows them at any time, not only as logged."""
    VOUCHERS.apply(db)
    if codes is None:  # only the codes with a problem, found in one query (no loop per code)
        codes = [str(c) for (c,) in db.execute(
            "SELECT r.code FROM central_redemptions AS r"
            " LEFT JOIN central_vouchers AS v ON v.code = r.code"
            " GROUP BY r.code, v.devices_max"
            " HAVING v.devices_max IS NULL OR count(DISTINCT r.mac) > v.devices_max"
            " ORDER BY r.code"
        ).fetchall()]  # fmt: skip
    findings = []
    for code in codes:
        rows = db.execute(
            "SELECT hub_id, mac, at, plan_id FROM central_redemptions WHERE code = ? "
            "ORDER BY at, hub_id",
            [code],
        ).fetchall()
        issued = db.execute(
            "SELECT plan_id, devices_max FROM central_vouchers WHERE code = ?", [code]
        ).fetchone()
        uses = tuple((str(h), str(m), float(a)) for h, m, a, _ in rows)
        if issued is None:
            findings.append(Finding("never_issued", code, str(rows[0][3]), 0, uses))
            continue
        devices = {m for _, m, _ in uses}
        if len(devices) > int(issued[1]):
            findings.append(Finding("over_redeemed", code, str(issued[0]), int(issued[1]), uses))
    return findings


def findings_command(db: Database, as_json: bool = False) -> int:
    """``hubctl vouchers findings [--json]``: codes redeemed by more devices than they
    allow (sold twice, or used on two offline hubs) and codes never issued. Exit 1 when
    there are any, so a cron job can alert."""
    found = findings_for(db)
    roaming = _roaming_findings(db)
    if as_json and roaming:  # roaming balances (provisioning/balances.py)
        print(json.dumps(_finding_rows(found) + roaming[1], indent=1))
        return 1
    for line in roaming[0] if roaming else []:
        print(line)
    if as_json:
        rows = [
            {"kind": f.kind, "code": format_code(f.code), "plan": f.plan_id,
             "devices_max": f.devices_max, "hubs": f.hubs,
             "redemptions": [{"hub": h, "device": m, "at": a} for h, m, a in f.redemptions]}
            for f in found
        ]  # fmt: skip
        print(json.dumps(rows, indent=1))
    elif not found and not roaming:
        print("no voucher findings")
    for f in [] if as_json else found:
        devices = len({m for _, m, _ in f.redemptions})
        print(
            f"{f.kind:13} {format_code(f.code)}  plan {f.plan_id}: {devices} device(s) of "
            f"{f.devices_max} allowed, on {', '.join(f.hubs)}"
        )
    return 1 if found or roaming else 0


def _roaming_findings(db: Database) -> tuple[list[str], list[dict[str, object]]] | None:
    from provisioning import balances

    found = balances.roaming_findings(db)
    return (balances.finding_lines(found), balances.finding_rows(found)) if found else None


def _finding_rows(found: list[Finding]) -> list[dict[str, object]]:
    return [{"kind": f.kind, "code": format_code(f.code), "plan": f.plan_id,
             "devices_max": f.devices_max, "hubs": f.hubs,
             "redemptions": [{"hub": h, "device": m, "at": a} for h, m, a in f.redemptions]}
            for f in found]  # fmt: skip


# --- hubctl vouchers issue ---------------------------------------------------------------
PER_PDF = 1000  # cards per PDF file: 100 A4 pages, a print job a shop's printer takes


def pdf_paths(out: Path, count: int, per_pdf: int) -> list[Path]:
    """``sheet.pdf`` for one file, else ``sheet-001.pdf``, ``sheet-002.pdf``, ..."""
    files = max(1, -(-count // per_pdf))
    if files == 1:
        return [out]
    width = max(3, len(str(files)))
    return [
        out.with_name(f"{out.stem}-{i:0{width}d}{out.suffix or '.pdf'}")
        for i in range(1, files + 1)
    ]


def issue_command(
    state: StateDir,
    db: Database,
    plan: str,
    count: int,
    out: Path | None,
    valid_months: int = DEFAULT_VALID_MONTHS,
    per_pdf: int = PER_PDF,
    progress: Callable[[str], None] | None = None,
) -> int:
    """``hubctl vouchers issue --plan P --count N [--out sheet.pdf] [--per-pdf 1000]``:
    print the codes on stdout and, with ``--out``, write the A4 sheets of cards, at most
    ``per_pdf`` cards a file (``sheet-001.pdf``, ...). Progress goes to stderr. Exit 2 on
    a bad argument."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    plans = catalogue()
    if plan not in plans:
        print(f"--plan: unknown plan {plan!r} (plans: {', '.join(sorted(plans))})", file=sys.stderr)
        return 2
    if not 1 <= per_pdf <= 10_000:
        print(f"--per-pdf: {per_pdf} outside 1..10000", file=sys.stderr)
        return 2
    try:
        batch = issue_batch(db, voucher_secret(state), plans[plan], count, None, valid_months)
    except ValueError as e:
        print(f"--{e}", file=sys.stderr)
        return 2
    say(f"{len(batch.codes)} code(s) issued for plan {plan} (recorded in the registry)")
    for code in batch.codes:
        print(format_code(code))
    if out is not None:
        cards = cards_for(batch)
        paths = pdf_paths(out, len(cards), per_pdf)
        done = 0
        for i, path in enumerate(paths):
            chunk = cards[i * per_pdf : (i + 1) * per_pdf]
            part = f" ({i + 1}/{len(paths)})" if len(paths) > 1 else ""
            title = f"{NETWORK_NAME} — {plan}{part}"
            pages = render_sheet(chunk, path, title=title)
            done += len(chunk)
            say(f"{path}: {len(chunk)} cards on {pages} page(s){part}; {done}/{len(cards)} done")
    return 0
