"""The session state machine held as data (hub_agent/sessions/states.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import pytest

from hub_agent.api.protocol import SessionView
from hub_agent.radius.accounting import TERMINATE_CAUSE
from hub_agent.sessions.quota import MB
from hub_agent.sessions.service import SessionService
from hub_agent.sessions.states import (
    END_REASONS,
    EXPIRED_BY,
    LIVE,
    QUOTA_REASONS,
    SHOWN_REASONS,
    TRANSITIONS,
    UNKNOWN,
    IllegalTransition,
    State,
    shown,
    step,
)
from tests.unit.test_sessions_service import T0, A, B, ctr, make_service

STATES: tuple[State, ...] = get_args(State)
ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]
REFUSED = [(a, b) for a in STATES for b in STATES if b not in TRANSITIONS[a]]
HUB_AGENT = Path(__file__).resolve().parents[2] / "hub_agent"


def _reason(target: str) -> str | None:
    return "logout" if target == "ended" else None


def test_the_table_names_every_state_and_only_states() -> None:
    assert set(TRANSITIONS) == set(STATES)
    assert all(t <= set(STATES) for t in TRANSITIONS.values())
    assert set(STATES) > LIVE and UNKNOWN not in LIVE and "ended" not in LIVE


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_every_allowed_transition_is_taken(current: State, target: State) -> None:
    assert step(current, target, _reason(target)) == target


@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_every_other_transition_is_refused(current: State, target: State) -> None:
    with pytest.raises(IllegalTransition, match=f"{current} -> {target}: not allowed"):
        step(current, target, _reason(target))


def test_the_refusals_that_matter() -> None:
    # a throttled session is never promoted back while it lives; nothing returns to unknown
    assert ("throttled", "authorised") in REFUSED
    assert all((s, UNKNOWN) in REFUSED for s in STATES)
    with pytest.raises(IllegalTransition, match="not a state"):
        step("bogus", "ended", "logout")


def test_every_state_is_reachable_from_unknown_and_none_is_a_dead_end() -> None:
    start: State = UNKNOWN
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(STATES)
    assert all(TRANSITIONS[s] for s in STATES)


@pytest.mark.parametrize("reason", sorted(END_REASONS))
def test_an_end_takes_each_known_reason(reason: str) -> None:
    assert step("authorised", "ended", reason) == "ended"
    assert step("throttled", "ended", reason) == "ended"


@pytest.mark.parametrize("reason", [None, "", "quota", "Logout"])
def test_an_end_without_a_known_reason_is_refused(reason: str | None) -> None:
    with pytest.raises(IllegalTransition, match="unknown end reason"):
        step("authorised", "ended", reason)


def test_only_an_end_takes_a_reason() -> None:
    with pytest.raises(IllegalTransition, match="takes no reason"):
        step("authorised", "throttled", "data_quota")


def test_end_reasons_are_complete() -> None:
    # every reason the accounting pass decides, the portal is told and RADIUS reports
    assert QUOTA_REASONS <= SHOWN_REASONS <= END_REASONS
    assert EXPIRED_BY <= QUOTA_REASONS
    assert set(TERMINATE_CAUSE) >= END_REASONS
    # and every reason the agent's code ends a session with is in the table
    used = set()
    pattern = re.compile(r"(?:\._end|\.end|_finish)\([^()]*?,\s*\"([a-z_]+)\"")
    for path in HUB_AGENT.rglob("*.py"):
        used |= set(pattern.findall(path.read_text()))
    assert {"logout", "caretaker", "blocked", "disconnect"} <= used <= END_REASONS


@pytest.mark.parametrize(
    ("state", "reason", "seen"),
    [
        ("authorised", None, ("authorised", None)),
        ("throttled", None, ("throttled", None)),
        ("ended", "data_quota", ("expired", "data_quota")),
        ("ended", "time_quota", ("expired", "time_quota")),
        ("ended", "idle", ("ended", "idle")),
        ("ended", "logout", ("ended", "logout")),
        ("ended", "disconnect", ("ended", None)),  # the protocol has no word for it
    ],
)
def test_what_the_portal_is_told(state: str, reason: str | None, seen: tuple[str, str]) -> None:
    assert shown(state, reason) == seen


@pytest.mark.parametrize("reason", sorted(END_REASONS))
def test_every_shown_session_fits_the_protocol(reason: str) -> None:
    for state, why in [("authorised", None), ("throttled", None), ("ended", reason)]:
        view_state, view_reason = shown(state, why)
        view = SessionView(
            state=view_state, plan_id="p", plan_name={}, down_kbit=0, up_kbit=0,
            bytes_used=0, bytes_remaining=None, seconds_remaining=None, started_at=0,
            ended_reason=view_reason,
        )  # fmt: skip
        assert view.state == view_state


def test_unknown_is_never_shown() -> None:
    with pytest.raises(IllegalTransition, match="not a stored state"):
        shown(UNKNOWN, None)


# --- the service takes only the table's transitions ------------------------------------
@pytest.fixture
def svc(tmp_path: Path) -> SessionService:
    return make_service(tmp_path)


def _record_transitions(svc: SessionService) -> Callable[[], set[tuple[str, str]]]:
    """Every state change of ``sessions`` as SQLite sees it, whatever code wrote it."""
    svc.conn.executescript(
        "CREATE TEMP TABLE moves (a TEXT, b TEXT);"
        "CREATE TEMP TRIGGER moves_new AFTER INSERT ON main.sessions"
        " BEGIN INSERT INTO moves VALUES ('unknown', new.state); END;"
        "CREATE TEMP TRIGGER moves_set AFTER UPDATE OF state ON main.sessions"
        " WHEN old.state != new.state BEGIN INSERT INTO moves VALUES (old.state, new.state); END;"
    )
    return lambda: {(str(a), str(b)) for a, b in svc.conn.execute("SELECT a, b FROM moves")}


def test_the_service_takes_every_transition_and_only_those(svc: SessionService) -> None:
    moves = _record_transitions(svc)
    [day] = svc.issue_local_vouchers("jour", 1, T0)  # throttles once its data is gone
    [hour] = svc.issue_local_vouchers("heure", 1, T0)
    assert svc.login(A, None, "voucher", day, T0)[1] is None  # unknown -> authorised
    [act] = svc.account(ctr(A, 0, 1000 * MB), T0 + 10)  # authorised -> throttled
    assert act.kind == "throttle"
    svc.logout(A, T0 + 20)  # throttled -> ended
    view, _ = svc.login(A, None, "voucher", day, T0 + 30)  # ended -> throttled (its slot)
    assert view is not None and view.state == "throttled"
    assert svc.login(A, None, "voucher", hour, T0 + 40)[1] is None  # throttled -> ended, new
    svc.account(ctr(A, 0, 0), T0 + 50)
    [end] = svc.account(ctr(A, 0, 0), T0 + 50 + 15 * 60)  # authorised -> ended (idle)
    assert end.reason == "idle"
    assert svc.login(A, None, "voucher", hour, T0 + 2000)[1] is None  # ended -> authorised
    assert svc.login(B, None, "free", None, T0 + 2000)[1] is None
    svc.block(B, True, T0 + 2010)
    assert moves() == set(ALLOWED)


def test_the_service_refuses_an_unknown_end_reason_and_keeps_the_session(
    svc: SessionService,
) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    with pytest.raises(IllegalTransition, match="unknown end reason 'reboot'"):
        svc.end(A, "reboot", T0 + 1)
    view = svc.session_view(A, T0 + 2)
    assert view is not None and view.state == "authorised"
