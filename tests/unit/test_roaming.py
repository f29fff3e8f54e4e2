"""Roaming balances: signed answers, the allowance maths, the hub's capped sessions and
the centre's folding of usage reports (both engines) and findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub_agent.roaming import (
    Answer,
    AnswerError,
    Asked,
    Known,
    UsedAt,
    decide,
    offline_allowance,
    sign_answer,
    verify_answer,
)
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.quota import MB
from hub_agent.signing import SigningKey
from provisioning import balances, vouchers
from provisioning.registry import open_registry
from provisioning.statedir import StateDir
from provisioning.storage import transaction
from tests.unit.test_sessions_service import T0, central, ctr, make_service

GB = 1000 * MB
MAC = "02:00:00:00:00:01"


def answer(**kw: Any) -> Answer:
    base: dict[str, Any] = dict(
        hub_id="hub-b", request_id="r1", code="C", issued=True, bytes_elsewhere=300 * MB,
        first_use=T0 - 3600, at=T0, used_at=(UsedAt("hub-a", "École A", 300 * MB),),
    )  # fmt: skip
    base.update(kw)
    return Answer(**base)


# --- signatures ------------------------------------------------------------------------------
def test_answer_signature_round_trip_and_refusals() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signed = sign_answer(key, answer())
    assert verify_answer(json.loads(json.dumps(signed)), key.public_b64, "hub-b", "r1") == answer()
    with pytest.raises(AnswerError, match="is for hub"):
        verify_answer(signed, key.public_b64, "hub-a")
    with pytest.raises(AnswerError, match="another request"):
        verify_answer(signed, key.public_b64, "hub-b", "r2")
    with pytest.raises(AnswerError, match="unknown key"):
        verify_answer(signed, other.public_b64, "hub-b")
    with pytest.raises(AnswerError, match="bad signature"):
        verify_answer({**signed, "bytes_elsewhere": 0}, key.public_b64, "hub-b")
    forged = {**sign_answer(other, answer()), "key_id": signed["key_id"]}
    with pytest.raises(AnswerError, match="bad signature"):
        verify_answer(forged, key.public_b64, "hub-b")
    with pytest.raises(AnswerError, match="not signed"):
        verify_answer({k: v for k, v in signed.items() if k != "sig"}, key.public_b64, "hub-b")


# --- allowance maths -------------------------------------------------------------------------
def test_offline_allowance_is_a_bounded_share() -> None:
    assert offline_allowance(1000 * MB, 25) == 250 * MB
    assert offline_allowance(1000 * MB, 0) == 0
    assert offline_allowance(1000 * MB, 150) == 1000 * MB
    assert offline_allowance(None, 25) is None


def test_decide() -> None:
    q = 1000 * MB
    d = decide("C", q, answer(), None, 25)
    assert (d.source, d.cap_bytes, d.error, d.first_use) == ("centre", 700 * MB, None, T0 - 3600)
    assert decide("C", q, answer(issued=False), None, 25).error == "unknown_code"
    assert decide("C", q, answer(bytes_elsewhere=q + 1), None, 25).error == "used_up"
    off = decide("C", q, None, None, 25)
    assert (off.source, off.cap_bytes, off.error) == ("offline", 250 * MB, None)
    # an earlier centre answer stands while the centre is away (no fresh allowance)
    prior = Known("centre", True, 300 * MB, 700 * MB)
    assert decide("C", q, None, prior, 25).cap_bytes == 700 * MB
    assert decide("C", q, None, Known("centre", False, 0, 0), 25).error == "unknown_code"
    assert decide("C", q, None, Known("offline", None, 0, 250 * MB), 25).cap_bytes == 250 * MB
    assert decide("C", q, None, None, 0).error == "used_up"


# --- the hub: capped sessions ----------------------------------------------------------------
def test_login_with_the_centres_balance_caps_the_slot(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    code = central("jour", 7)  # 1000 MB
    asked = Asked(code, 1000 * MB, answer(code=code), 25)
    granted: list[Any] = []
    view, err = svc.login(MAC, "10.42.0.10", "voucher", code, T0, enforce=granted.append,
                          balance=asked)  # fmt: skip
    assert err is None and view is not None
    assert view.bytes_remaining == 700 * MB
    assert granted[0].quota_bytes == 700 * MB
    assert view.used_elsewhere is not None and view.used_elsewhere[0].hub == "École A"
    assert not view.balance_offline
    # the time quota runs from the first use anywhere (an hour ago)
    assert view.seconds_remaining == 1440 * 60 - 3600
    svc.account(ctr(MAC, 0, 700 * MB), T0 + 60)
    after = svc.session_view(MAC, T0 + 61)
    assert after is not None and after.bytes_remaining == 0  # at the roaming balance
    assert after.state == "throttled"  # this plan throttles once its data is used


def test_never_issued_code_is_refused_online(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    code = central("jour", 8)
    asked = Asked(code, 1000 * MB, answer(code=code, issued=False), 25)
    view, err = svc.login(MAC, None, "voucher", code, T0, balance=asked)
    assert view is None and err == "unknown_code"


def test_offline_allowance_then_reconciled(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    code = central("jour", 9)
    view, err = svc.login(MAC, None, "voucher", code, T0, balance=Asked(code, 1000 * MB, None, 25))
    assert err is None and view is not None
    assert view.bytes_remaining == 250 * MB and view.balance_offline
    svc.account(ctr(MAC, 0, 100 * MB), T0 + 10)
    usage = sroaming.pending_usage(svc.conn)
    assert [(u.code, u.bytes, u.granted) for u in usage] == [(code, 100 * MB, "offline")]
    assert sroaming.offline_codes(svc.conn) == [(code, "jour")]
    # the centre is back: 800 MB were used elsewhere -> 200 MB cap, 100 MB left here
    back = Asked(code, 1000 * MB, answer(code=code, bytes_elsewhere=800 * MB), 25)
    actions = svc.apply_roaming(back, T0 + 20)
    assert [(a.kind, a.grant.quota_bytes if a.grant else None) for a in actions] == [
        ("regrant", 100 * MB)
    ]
    v = svc.session_view(MAC, T0 + 21)
    assert v is not None and v.bytes_remaining == 100 * MB and not v.balance_offline
    assert sroaming.offline_codes(svc.conn) == []


# --- the centre -----------------------------------------------------------------------------
def report(hub: str, seq: int, code: str, b: int, granted: str = "centre") -> balances.Report:
    return balances.Report(hub, seq, code, b, T0, 1, granted, T0)


def test_newest_report_wins_whatever_the_order() -> None:
    rs = [report("a", 5, "C", 50), report("a", 3, "C", 30), report("b", 1, "C", 7)]
    assert [(r.hub_id, r.bytes) for r in balances.newest(rs)] == [("a", 50), ("b", 7)]


def test_fold_answer_and_findings(central_db_url: str, tmp_path: Path) -> None:
    db = open_registry(central_db_url)
    state = StateDir(tmp_path / "central")
    secret = vouchers.voucher_secret(state)
    code = vouchers.issue_batch(db, secret, vouchers.catalogue()["heure"], 1, T0).codes[0]
    with transaction(db):
        balances.fold(db, [report("hub-a", 4, code, 200 * MB)], T0)
    with transaction(db):  # a re-sent older report changes nothing
        balances.fold(db, [report("hub-a", 2, code, 100 * MB), report("hub-a", 4, code, 200 * MB)])
    a = balances.answer_for(db, "hub-b", "q1", code, "heure", T0)
    assert (a.issued, a.bytes_elsewhere, a.first_use) == (True, 200 * MB, T0)
    assert [u.hub for u in a.used_at] == ["hub-a"]
    own = balances.answer_for(db, "hub-a", "q2", code, "heure", T0)
    assert own.bytes_elsewhere == 0  # a hub's own usage is its own sessions'
    row = db.execute("SELECT bytes_used, hubs FROM code_balances WHERE code = ?", [code])
    assert tuple(row.fetchone()) == (200 * MB, 1)
    assert balances.roaming_findings(db) == []
    # hub-b and hub-c were offline: each granted its share, the code is worth 300 MB
    with transaction(db):
        balances.fold(db, [report("hub-b", 9, code, 75 * MB, "offline"),
                           report("hub-c", 1, code, 75 * MB, "offline")])  # fmt: skip
    (f,) = balances.roaming_findings(db)
    assert (f.kind, f.used_bytes, f.over_bytes) == ("offline_overspend", 350 * MB, 50 * MB)
    assert [h for h, _, _ in f.hubs] == ["hub-a", "hub-b", "hub-c"]
    forged = central("heure", 77, secret="x" * 40)
    balances.answer_for(db, "hub-c", "q3", forged, "heure", T0)
    kinds = {(f.kind, f.code) for f in balances.roaming_findings(db)}
    assert ("never_issued", forged) in kinds
    lines = balances.finding_lines(balances.roaming_findings(db))
    assert any("50 MB over" in line and "hub-c" in line for line in lines)
