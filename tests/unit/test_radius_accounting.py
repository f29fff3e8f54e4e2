"""Accounting: the pure planning (what to send next, backoff, octets and gigawords) and the
journal in a fresh in-memory database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hub_agent.radius.accounting import (
    BACKOFF_MAX_S,
    Journal,
    Pending,
    SessionStart,
    backoff,
    interim_due,
    next_wake,
    plan_sends,
    record_attrs,
    split_octets,
    with_delay,
)
from hub_agent.radius.client import RadiusUnavailable
from hub_agent.radius.packets import AttrList, Nas
from hub_agent.radius.sender import AccountingSender
from hub_agent.store import connect

NAS = Nas("tg-test-01", "tg-test-01", None, "Mairie")
S = SessionStart("S1", "alice", "02:00:00:00:00:01", "10.42.0.9", (b"\x01cls",), 120)


def _p(id: int, sid: str, next_try: float = 0.0, tries: int = 0) -> Pending:
    return Pending(id, sid, "Interim-Update", 0.0, [], tries, next_try)


def test_split_octets() -> None:
    assert split_octets(0) == (0, 0)
    assert split_octets((1 << 32) - 1) == ((1 << 32) - 1, 0)
    assert split_octets(5 * (1 << 32) + 7) == (7, 5)


def test_record_attrs_start_and_stop() -> None:
    start = dict(record_attrs(NAS, S, "Start", 1000.0, 1000.0))
    assert start["Acct-Status-Type"] == "Start"
    assert "Acct-Input-Octets" not in start
    assert start["Class"] == b"\x01cls"
    assert start["Calling-Station-Id"] == "02-00-00-00-00-01"
    stop = dict(record_attrs(NAS, S, "Stop", 1300.0, 1000.0, 3 << 32, 10, "logout"))
    assert (stop["Acct-Input-Octets"], stop["Acct-Input-Gigawords"]) == (0, 3)
    assert (stop["Acct-Output-Octets"], stop["Acct-Output-Gigawords"]) == (10, 0)
    assert stop["Acct-Session-Time"] == 300
    assert stop["Acct-Terminate-Cause"] == "User-Request"
    assert dict(record_attrs(NAS, S, "Stop", 1, 0, cause="?"))["Acct-Terminate-Cause"] == (
        "NAS-Request"
    )
    assert dict(with_delay([], 1000.0, 1042.7))["Acct-Delay-Time"] == 42


def test_plan_sends_one_head_per_session_in_order() -> None:
    rows = [_p(1, "a"), _p(2, "a"), _p(3, "b", next_try=50), _p(4, "c"), _p(5, "b")]
    assert [r.id for r in plan_sends(rows, 10, frozenset(), 10)] == [1, 4]  # b waits
    assert [r.id for r in plan_sends(rows, 60, frozenset(), 10)] == [1, 3, 4]
    assert [r.id for r in plan_sends(rows, 60, frozenset({"a"}), 10)] == [3, 4]
    assert [r.id for r in plan_sends(rows, 60, frozenset(), 2)] == [1, 3]
    assert next_wake(rows, 10) == 0
    assert next_wake([_p(3, "b", next_try=50), _p(5, "b")], 10) == 40
    assert next_wake([], 10) is None


def test_backoff_and_interim() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [1, 2, 4]
    assert backoff(50) == BACKOFF_MAX_S
    assert not interim_due(100, 120, 219)
    assert interim_due(100, 120, 220)


def test_journal_lifecycle() -> None:
    j = Journal(connect(":memory:"), NAS)
    woke: list[int] = []
    j.on_record = lambda: woke.append(1)
    j.start(S, now=1000)
    j.start(S, now=1001)  # idempotent
    assert not j.observe("S1", 1, 2, now=1100)
    assert j.observe("S1", 3, 4, now=1120)
    assert not j.observe("S1", 5, 6, now=1200)  # next one due at 1240
    assert j.interim("S1", 7, 8, now=1201)  # forced (after a CoA)
    assert j.stop("S1", 9, 10, "idle", now=1300)
    assert not j.stop("S1", 9, 10, "idle", now=1301)  # once only
    assert not j.observe("S1", 11, 12, now=2000)  # ended
    assert j.live() == []
    rows = j.pending()
    assert [r.status for r in rows] == ["Start", "Interim-Update", "Interim-Update", "Stop"]
    assert dict(rows[0].attrs)["Class"] == b"\x01cls"  # bytes survive the JSON column
    assert dict(rows[3].attrs)["Acct-Session-Time"] == 300
    assert len(woke) == 4
    j.failed(rows[0].id, now=2000)
    j.failed(rows[0].id, now=2000)
    again = j.pending()[0]
    assert (again.tries, again.next_try) == (2, 2002)
    j.retry_now(now=2000.5)
    assert j.pending()[0].next_try == 2000.5
    for r in rows:
        j.acked(r.id)
    assert j.pending() == []
    assert j.prune(before=1400) == 1


def test_sender_delivers_in_order_and_backs_off() -> None:
    j = Journal(connect(":memory:"), NAS)
    j.start(S, now=1000)
    j.stop("S1", 1, 2, "logout", now=1010)
    j.start(SessionStart("S2", "bob", "02:00:00:00:00:02", None), now=1005)
    sent: list[tuple[str, str]] = []
    down = [True]
    clock = [2000.0]

    async def send(attrs_at: Callable[[float], AttrList]) -> None:
        a = dict(attrs_at(clock[0]))
        if down[0]:
            raise RadiusUnavailable("down")
        sent.append((a["Acct-Session-Id"], a["Acct-Status-Type"]))

    sender = AccountingSender(j, send, clock=lambda: clock[0])
    assert asyncio.run(sender.pass_once()) == pytest.approx(1.0)  # both heads backed off
    assert sent == []
    down[0] = False
    clock[0] += 1
    assert asyncio.run(sender.pass_once()) is None
    # each session in order; the sessions in parallel
    assert sent == [("S1", "Start"), ("S2", "Start"), ("S1", "Stop")]
    assert sender.sent == 3
