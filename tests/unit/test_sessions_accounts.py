"""Account (RADIUS) sessions: their own terms enforced like a voucher's, wrong passwords
counted, CoA changes, and the accounting journal kept in step with the sessions table."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.accounts import Accounts
from hub_agent.config import ConfigError, validate_config
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import Grant
from hub_agent.radius import Change, Journal, Nas, Target
from hub_agent.radius.accounting import TERMINATE_CAUSE
from hub_agent.sessions import accounts
from hub_agent.sessions.accounts import Terms, Tracked, plan_sync
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.quota import MB
from hub_agent.sessions.service import SessionService
from tests.unit.test_sessions_service import T0, A, B, ctr

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
RADIUS = {"primary": {"address": "192.0.2.10", "secret": "long-enough-secret"}}
TERMS = Terms(
    session_id="S-1",
    username="alice",
    down_kbit=2048,
    up_kbit=512,
    quota_bytes=5 * MB,
    time_limit_s=3600,
    idle_timeout_s=600,
    interim_s=120,
    classes=(b"alice-class".hex(),),
)


def _data(**portal: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    data["portal"].update(portal)
    return data


@pytest.fixture
def svc(tmp_path: Path) -> SessionService:
    data = _data(login_methods=["voucher", "free", "account"])
    data["radius"] = RADIUS
    data["data_dir"] = str(tmp_path)
    return SessionService(validate_config(data), open_sessions_db(tmp_path / "hub.db"))


def _journal(svc: SessionService) -> Journal:
    return Journal(svc.db, Nas.from_config(svc.config))


def _records(j: Journal) -> list[tuple[str, dict[str, Any]]]:
    return [(p.session_id, dict(p.attrs)) for p in j.pending()]


# --- config -------------------------------------------------------------------------------
def test_account_login_needs_a_radius_section_named_by_path() -> None:
    with pytest.raises(ConfigError) as e:
        validate_config(_data(login_methods=["voucher", "account"]))
    assert [p for p, _ in e.value.problems] == ["radius"]
    assert "portal.login_methods" in e.value.problems[0][1]
    data = _data(login_methods=["voucher", "account"])
    data["radius"] = RADIUS
    assert "account" in validate_config(data).portal.login_methods


# --- pure parts ---------------------------------------------------------------------------
def test_terms_round_trip_limits_and_coa_changes() -> None:
    assert Terms.load(TERMS.dump()) == TERMS
    limits = TERMS.limits()
    assert (limits.quota_bytes, limits.time_quota_s, limits.idle_timeout_s) == (5 * MB, 3600, 600)
    assert not limits.throttle_on_data  # an account's quota ends the session
    changed = TERMS.changed(Change(down_kbit=256, quota_bytes=MB))
    assert (changed.down_kbit, changed.up_kbit, changed.quota_bytes) == (256, 512, MB)
    assert TERMS.start("02:00:00:00:00:0a", "10.42.0.5").classes == (b"alice-class",)


def test_matches_every_named_field() -> None:
    ip = "10.42.0.5"
    assert accounts.matches(Target(session_id="S-1"), A, ip, TERMS)
    assert accounts.matches(Target(username="alice", mac=A, ip=ip), A, ip, TERMS)
    assert not accounts.matches(Target(username="alice", mac=B), A, ip, TERMS)
    assert not accounts.matches(Target(session_id="S-2"), A, ip, TERMS)


def _tracked(**kw: Any) -> Tracked:
    base: dict[str, Any] = dict(
        mac=A, ip=None, terms=TERMS, live=True, started_at=T0, up_bytes=0, down_bytes=0,
        ended_reason=None, journaled=True, stopped=False,
    )  # fmt: skip
    return Tracked(**{**base, **kw})


def test_plan_sync_starts_observes_and_stops_once() -> None:
    new, live = _tracked(journaled=False), _tracked()
    ended, done = _tracked(live=False, ended_reason="idle"), _tracked(live=False, stopped=True)
    assert plan_sync([new, live, ended, done]) == [
        ("start", new), ("observe", new), ("observe", live), ("stop", ended),
    ]  # fmt: skip
    # ended before its Start went out (a crash): Start then Stop
    lost = _tracked(live=False, journaled=False, ended_reason="logout")
    assert [k for k, _ in plan_sync([lost])] == ["start", "stop"]


# --- the service with per-session terms ---------------------------------------------------
def test_accepted_account_gets_its_own_rates_quota_and_time(svc: SessionService) -> None:
    view, err = svc.login(A, "10.42.0.5", "account", None, T0, account=TERMS)
    assert err is None and view is not None
    assert (view.plan_id, view.plan_name["fr"], view.down_kbit, view.up_kbit) == (
        "account", "Compte alice", 2048, 512,
    )  # fmt: skip
    assert (view.bytes_remaining, view.seconds_remaining) == (5 * MB, 3600)
    grant = svc.grant_for(A, T0)
    assert grant is not None
    assert (grant.down_kbit, grant.up_kbit, grant.quota_bytes) == (2048, 512, 5 * MB)
    assert [g.mac for g in svc.grants(T0).grants if not g.staff] == [A]
    # the same kernel quota as a voucher: the data runs out, the session ends
    assert svc.account(ctr(A, MB, 2 * MB), T0 + 10) == []
    [action] = svc.account(ctr(A, 2 * MB, 3 * MB), T0 + 20)
    assert (action.kind, action.reason) == ("deauthorize", "data_quota")


def test_session_timeout_and_idle_timeout_end_it(svc: SessionService) -> None:
    svc.login(A, "10.42.0.5", "account", None, T0, account=TERMS)
    [idle] = svc.account(ctr(A, 0, 0), T0 + 601)
    assert idle.reason == "idle"
    svc.login(B, "10.42.0.6", "account", None, T0, account=TERMS)
    now = T0
    while now < T0 + 3600:  # busy all along: the Session-Timeout still ends it
        now += 300
        actions = svc.account(ctr(B, int(now - T0), 0), now)
    assert [a.reason for a in actions] == ["time_quota"]


def test_named_hub_plan_shows_its_name_and_survives_a_config_change(
    svc: SessionService,
) -> None:
    svc.login(A, "10.42.0.5", "account", None, T0, account=TERMS.changed(Change(plan_id="jour")))
    view = svc.session_view(A, T0)
    assert view is not None and view.plan_id == "jour"
    assert view.plan_name["fr"] == "Compte alice"
    # a new config (plans removed): an account session keeps its terms
    data = svc.config.to_wire()
    data["plans"] = [p for p in data["plans"] if p["id"] != "jour"]
    assert svc.update_config(validate_config(data), T0 + 5) == []
    assert svc.grant_for(A, T0 + 5) is not None


def test_a_rejected_password_counts_as_a_wrong_attempt(svc: SessionService) -> None:
    before = svc.attempts(A, T0).attempts_left
    assert svc.login(A, "10.42.0.5", "account", None, T0) == (None, "bad_account")
    assert svc.attempts(A, T0).attempts_left == before - 1
    assert svc.grant_for(A, T0) is None


def test_disabled_account_method_is_refused(tmp_path: Path) -> None:
    data = _data()
    data["data_dir"] = str(tmp_path)
    s = SessionService(validate_config(data), open_sessions_db(tmp_path / "hub.db"))
    assert s.login(A, "10.42.0.5", "account", None, T0, account=TERMS) == (
        None,
        "method_disabled",
    )


def test_coa_changes_rate_and_counts_the_new_quota_from_now(svc: SessionService) -> None:
    svc.login(A, "10.42.0.5", "account", None, T0, account=TERMS)
    svc.account(ctr(A, MB, MB), T0 + 2)
    [(mac, terms)] = accounts.live_matching(svc.conn, Target(username="alice"))
    accounts.set_terms(svc.conn, mac, terms.changed(Change(down_kbit=128, quota_bytes=3 * MB)))
    grant = svc.grant_for(A, T0 + 3)
    assert grant is not None and (grant.down_kbit, grant.quota_bytes) == (128, MB)
    assert accounts.live_matching(svc.conn, Target(username="bob")) == []


# --- accounting follows the table ---------------------------------------------------------
def test_sync_queues_start_interims_and_the_stop_with_its_cause(svc: SessionService) -> None:
    j = _journal(svc)
    svc.seen(A, "10.42.0.5", T0)
    svc.login(A, "10.42.0.5", "account", None, T0, account=TERMS)
    assert accounts.sync(j, svc.conn, T0 + 1) == 2  # start + observe
    assert accounts.sync(j, svc.conn, T0 + 2) == 1  # observe only, nothing due
    [(sid, start)] = _records(j)
    assert (sid, start["Acct-Status-Type"], start["Framed-IP-Address"]) == (
        "S-1", "Start", "10.42.0.5",
    )  # fmt: skip
    svc.account(ctr(A, 1000, 5000), T0 + 121)
    accounts.sync(j, svc.conn, T0 + 121)
    interim = _records(j)[-1][1]
    assert interim["Acct-Status-Type"] == "Interim-Update"
    assert (interim["Acct-Input-Octets"], interim["Acct-Output-Octets"]) == (1000, 5000)
    svc.account(ctr(A, 3000, 9000), T0 + 125)
    svc.logout(A, T0 + 126)
    accounts.sync(j, svc.conn, T0 + 127)
    stop = _records(j)[-1][1]
    assert stop["Acct-Status-Type"] == "Stop"
    assert stop["Acct-Terminate-Cause"] == TERMINATE_CAUSE["logout"] == "User-Request"
    assert (stop["Acct-Input-Octets"], stop["Acct-Output-Octets"]) == (3000, 9000)
    assert accounts.sync(j, svc.conn, T0 + 130) == 0  # once only
    assert j.live() == []


@pytest.mark.parametrize(("reason", "cause"), [("idle", "Idle-Timeout"), ("data_quota",
                         "Session-Timeout"), ("caretaker", "Admin-Reset")])  # fmt: skip
def test_each_end_reason_has_its_terminate_cause(
    svc: SessionService, reason: str, cause: str
) -> None:
    j = _journal(svc)
    svc.login(A, "10.42.0.5", "account", None, T0, account=TERMS)
    accounts.sync(j, svc.conn, T0)
    svc.end(A, reason, T0 + 1)
    accounts.sync(j, svc.conn, T0 + 2)
    assert _records(j)[-1][1]["Acct-Terminate-Cause"] == cause


def test_a_voucher_after_an_account_stops_the_account(svc: SessionService) -> None:
    j = _journal(svc)
    svc.login(A, "10.42.0.5", "account", None, T0, account=TERMS)
    accounts.sync(j, svc.conn, T0)
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    assert svc.login(A, "10.42.0.5", "voucher", code, T0 + 5)[1] is None
    accounts.sync(j, svc.conn, T0 + 6)
    assert [r[1]["Acct-Status-Type"] for r in _records(j)] == ["Start", "Stop"]
    grant = svc.grant_for(A, T0 + 6)
    assert grant is not None and grant.down_kbit == 2000  # the plan's rate again


# --- one login, one transaction; the gate off the worker ----------------------------------
def test_an_account_login_commits_its_start_with_the_session_or_neither(
    svc: SessionService,
) -> None:
    j = _journal(svc)

    def record() -> None:
        accounts.sync(j, svc.conn, T0)

    def refuse(grant: Grant) -> None:
        assert _records(j) != []  # the Start is written before the kernel is asked
        raise OSError("kernel refused")

    with pytest.raises(OSError):
        svc.login(A, "10.42.0.5", "account", None, T0, refuse, account=TERMS, record=record)
    assert svc.session_view(A, T0) is None and j.session("S-1") is None and _records(j) == []
    granted: list[Grant] = []
    assert svc.login(A, "10.42.0.5", "account", None, T0, granted.append, account=TERMS,
                     record=record)[1] is None  # fmt: skip
    assert [g.mac for g in granted] == [A] and j.session("S-1") is not None
    assert [(sid, r["Acct-Status-Type"]) for sid, r in _records(j)] == [("S-1", "Start")]


def test_the_gate_reads_blocks_and_wrong_passwords_from_another_thread(
    svc: SessionService,
) -> None:
    enforcer = Enforcer(svc.config, dry_run=True, shaping=False)

    async def inline(fn: Callable[[], Any]) -> Any:
        return fn()

    acc = Accounts(svc.config, svc.db, svc, lambda: enforcer, inline, lambda: None)
    limit = svc.config.portal.login_attempts
    with ThreadPoolExecutor(1) as other:  # not the thread that writes

        def standing(now: float) -> tuple[bool, int, int]:
            blocked, v = other.submit(acc.standing, A, now).result()
            return blocked, v.retry_after, v.attempts_left

        assert standing(T0) == (False, 0, limit)
        for i in range(limit - 1):  # wrong passwords (RADIUS rejected: no terms)
            assert svc.login(A, "10.42.0.5", "account", None, T0 + i) == (None, "bad_account")
        assert standing(T0 + limit) == (False, 0, 1)
        svc.login(A, "10.42.0.5", "account", None, T0 + limit)
        assert standing(T0 + limit)[1] > 0  # locked: no Access-Request goes out
        svc.block(B, True, T0)
        assert standing(T0)[0] is False and other.submit(acc.standing, B, T0).result()[0]
    asyncio.run(acc.stop())
