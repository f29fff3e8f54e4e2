"""Reconciliation of a day's purchases against the providers' own status (the truth).

For each purchase created in the window: ask its provider; a payment still open (new,
pending) or closed on our side (failed, expired) that the provider says is paid is moved
to paid and granted (late confirmations are not lost); one we sold that the provider
says is not paid, or paid with another amount, is a problem for a person. So are voucher
codes of unpaid purchases that a hub reported as redeemed (the code is in the payment
description from the start, so a phone could read it and then refuse to pay).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub_agent.sessions.vouchers import format_code
from provisioning.payments import store
from provisioning.payments.base import ProviderRefused, ProviderUnavailable
from provisioning.payments.service import PaymentService

SOLD = ("paid", "granted", "delivered")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: int = 0
    changed: int = 0


def reconcile_day(svc: PaymentService, since: float, until: float) -> Report:
    report = Report()
    with svc.lock:
        rows = store.select(svc.db, since=since, until=until)
    for p in rows:
        try:
            status = svc.providers[p.provider].status(p.ref, p.provider_ref)
        except (ProviderUnavailable, ProviderRefused, KeyError) as e:
            report.lines.append(f"{p.ref} {p.hub_id}: {p.state}; provider unreachable ({e})")
            continue
        after = p.state
        if p.state in ("new", "pending", "failed", "expired"):
            fresh = svc.apply_status(p, status, "reconcile")
            after = fresh.state
        said = f"{status.outcome} {status.amount if status.amount is not None else '?'}"
        line = f"{p.ref} {p.hub_id} {p.amount} XOF: {p.state}"
        line += f" -> {after}" if after != p.state else ""
        line += f"; provider: {said}"
        if after != p.state:
            report.changed += 1
        problem = after == "mismatch" or (after in SOLD and status.outcome != "paid")
        if problem:
            report.problems += 1
            line += "  << CHECK"
        report.lines.append(line)
    for code, hub_id, ref, state in unpaid_redemptions(svc):
        report.problems += 1
        report.lines.append(
            f"{ref} code {format_code(code)} redeemed on {hub_id} but the purchase is {state}"
            "  << CHECK"
        )
    report.lines.append(
        f"{len(rows)} purchase(s), {report.changed} changed, {report.problems} to check"
    )
    return report


def unpaid_redemptions(svc: PaymentService) -> list[tuple[str, str, str, str]]:
    with svc.lock:
        rows = svc.db.execute(
            "SELECT r.code, r.hub_id, p.ref, p.state FROM central_redemptions r"
            " JOIN payments p ON p.code = r.code"
            " WHERE p.state NOT IN ('paid', 'granted', 'delivered')"
            " ORDER BY p.created_at"
        ).fetchall()
    return [(str(c), str(h), str(r), str(s)) for c, h, r, s in rows]
