"""The agent waits for the portal's word on a config that moves its listeners
(hub_agent/portal_follow.py): a refusal is returned, a portal that is not following is not
waited for, and silence past the wait is not a refusal."""

from __future__ import annotations

import logging
import threading

import pytest

from hub_agent.portal_follow import FOLLOWING_S, PortalFollow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_portal_following_is_not_waited_for() -> None:
    follow = PortalFollow(Clock())
    assert not follow.following()
    assert follow.refusal(7, timeout_s=3600) is None  # returns at once: nobody to wait for


def test_a_portal_stops_following_after_its_long_poll_is_gone_a_while() -> None:
    clock = Clock()
    follow = PortalFollow(clock)
    follow.seen()
    assert follow.following()
    clock.now += FOLLOWING_S + 1
    assert not follow.following()


def test_the_portal_s_word_is_waited_for_and_returned() -> None:
    follow = PortalFollow(Clock())
    follow.seen()
    got: list[str | None] = []
    waiting = threading.Thread(target=lambda: got.append(follow.refusal(8, timeout_s=60)))
    waiting.start()
    follow.said(7, "an older version's word")  # not the one waited for
    follow.said(8, "cannot listen on 10.42.0.1:8090 (Address already in use)")
    waiting.join(60)
    assert got == ["cannot listen on 10.42.0.1:8090 (Address already in use)"]
    follow.said(9, None)
    assert follow.refusal(9, timeout_s=0) is None  # it serves there


def test_silence_is_not_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    follow = PortalFollow(Clock())
    follow.seen()
    with caplog.at_level(logging.WARNING, logger="hub_agent.portal_follow"):
        assert follow.refusal(5, timeout_s=0) is None
    assert "v5: the portal did not say" in caplog.text


def test_only_the_last_words_are_kept() -> None:
    follow = PortalFollow(Clock())
    follow.seen()
    for version in range(1, 100):
        follow.said(version, f"why {version}")
    assert follow.refusal(99, timeout_s=0) == "why 99"
    assert follow.refusal(1, timeout_s=0) is None  # forgotten long ago


def test_a_version_applied_again_forgets_the_word_on_its_namesake() -> None:
    follow = PortalFollow(Clock())
    follow.seen()
    follow.said(2, "cannot listen on 10.42.0.1:8090")  # v2, rolled back
    follow.forget(2)  # another v2 is applied
    assert not follow.heard(2)
