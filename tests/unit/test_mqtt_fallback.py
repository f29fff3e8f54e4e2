"""The hub's choice of broker user during a rotation, on a fake clock: fall back at once
when the new user is refused, try it again on a jittered, capped backoff, move back."""

from __future__ import annotations

import pytest

from hub_agent.mqtt.core import Backoff
from hub_agent.mqtt.fallback import RETRY_NEW_ENV, CredentialChoice, retry_new_min_s


def choice(rnd: float = 1.0) -> CredentialChoice:
    return CredentialChoice(True, Backoff(100.0, 800.0, rnd=lambda: rnd))


def test_a_refused_new_user_falls_back_at_once_and_is_tried_again_later() -> None:
    c = choice()
    assert not c.previous and not c.probe_due(0.0)
    assert c.refused(now=10.0)  # reconnect at once, as the previous user
    assert c.previous and c.due == 110.0
    assert not c.probe_due(109.9)
    assert c.probe_due(110.0)
    assert not c.probe_due(111.0)  # one try at a time: the outcome plans the next


def test_refused_tries_back_off_up_to_the_cap_then_an_accepted_one_moves_back() -> None:
    c = choice()
    c.refused(now=0.0)
    now, delays = 0.0, []
    for _ in range(6):
        assert c.due is not None
        now = c.due
        assert c.probe_due(now)
        c.probed(accepted=False, now=now)
        assert c.previous
        assert c.due is not None
        delays.append(c.due - now)
    assert delays == [200.0, 400.0, 800.0, 800.0, 800.0, 800.0]
    c.probed(accepted=True, now=now)
    assert not c.previous and c.due is None and c.retry.attempt == 0
    assert c.refused(now=now)  # refused again later: the first delay again
    assert c.due == now + 100.0


def test_the_delay_is_jittered_between_half_and_all_of_it() -> None:
    low, high = choice(rnd=0.0), choice(rnd=1.0)
    low.refused(0.0)
    high.refused(0.0)
    assert (low.due, high.due) == (50.0, 100.0)


def test_without_a_fallback_nothing_changes_and_no_try_is_planned() -> None:
    c = CredentialChoice(False)
    assert not c.refused(0.0)
    assert not c.previous and c.due is None and not c.probe_due(1e9)


def test_the_previous_user_refused_too_names_the_new_one_next_after_a_backoff() -> None:
    c = choice()
    c.refused(0.0)
    assert not c.refused(1.0)  # not at once: the usual reconnect backoff
    assert not c.previous and c.due is None
    c.probed(accepted=True, now=2.0)  # a late probe outcome changes nothing now
    assert not c.previous


def test_the_lab_shortens_the_first_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RETRY_NEW_ENV, "3")
    assert retry_new_min_s() == 3.0
    monkeypatch.setenv(RETRY_NEW_ENV, "soon")
    assert retry_new_min_s() == 120.0
    monkeypatch.delenv(RETRY_NEW_ENV)
    assert retry_new_min_s() == 120.0
