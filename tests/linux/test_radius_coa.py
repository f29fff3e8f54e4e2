"""Disconnect-Request and CoA-Request from FreeRADIUS' radclient to the hub's listener:
the callbacks run and radclient sees ACK; NAK with Error-Cause for an unknown session or an
unsupported attribute; silence for an unconfigured source or a wrong secret."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hub_agent.radius import Change, CoaListener, Target
from lab.radius import SECRET, hub_config, radclient, require_freeradius

SESSIONS = {"S-1": ("alice", "02:00:00:00:00:01")}


class Hub:
    """The agent's side: one live session, and what the listener asked."""

    def __init__(self) -> None:
        self.ended: list[Target] = []
        self.changed: list[tuple[Target, Change]] = []

    def find(self, t: Target) -> bool:
        for sid, (user, mac) in SESSIONS.items():
            if (
                (t.session_id in (None, sid))
                and (t.username in (None, user))
                and (t.mac in (None, mac))
            ):
                return True
        return False

    async def on_disconnect(self, t: Target) -> bool:
        if not self.find(t):
            return False
        self.ended.append(t)
        return True

    async def on_change(self, t: Target, c: Change) -> bool:
        if not self.find(t):
            return False
        self.changed.append((t, c))
        return True


def _with_listener(
    hub: Hub, scenario: Callable[[int], Awaitable[Any]], server: str = "127.0.0.1"
) -> Any:
    require_freeradius()
    config = hub_config((server, 1812, 1813), coa_listen="127.0.0.1")

    async def main() -> Any:
        listener = CoaListener(config, hub.on_disconnect, hub.on_change)
        port = await listener.start(port=0)
        try:
            return await scenario(port)
        finally:
            listener.close()

    return asyncio.run(main())


async def _send(
    port: int, code: str, attrs: dict[str, str], secret: str = SECRET, timeout: float = 1.0
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(radclient, port, code, attrs, secret, timeout)


def test_disconnect_by_session_id_is_acked() -> None:
    hub = Hub()
    got = _with_listener(hub, lambda port: _send(port, "disconnect", {"Acct-Session-Id": '"S-1"'}))
    assert "Received Disconnect-ACK" in got.stdout, got.stdout + got.stderr
    assert hub.ended == [Target(session_id="S-1")]


def test_disconnect_of_an_unknown_session_is_a_nak_with_error_cause() -> None:
    hub = Hub()
    got = _with_listener(
        hub,
        lambda port: _send(
            port,
            "disconnect",
            {"Calling-Station-Id": '"02-00-00-00-00-99"', "Message-Authenticator": "0x00"},
        ),
    )
    assert "Received Disconnect-NAK" in got.stdout, got.stdout + got.stderr
    assert "Error-Cause = Session-Context-Not-Found" in got.stdout
    assert hub.ended == []


def test_coa_changes_the_rate() -> None:
    hub = Hub()
    got = _with_listener(
        hub,
        lambda port: _send(
            port,
            "coa",
            {
                "User-Name": '"alice"',
                "Calling-Station-Id": '"02-00-00-00-00-01"',
                "WISPr-Bandwidth-Max-Down": "1000000",
                "WISPr-Bandwidth-Max-Up": "250000",
                "Message-Authenticator": "0x00",
            },
        ),
    )
    assert "Received CoA-ACK" in got.stdout, got.stdout + got.stderr
    [(target, change)] = hub.changed
    assert target == Target(username="alice", mac="02:00:00:00:00:01")
    assert change == Change(down_kbit=1000, up_kbit=250)


def test_coa_with_an_unsupported_attribute_is_refused() -> None:
    hub = Hub()
    got = _with_listener(
        hub,
        lambda port: _send(port, "coa", {"Acct-Session-Id": '"S-1"', "Framed-MTU": "1400"}),
    )
    assert "Received CoA-NAK" in got.stdout, got.stdout + got.stderr
    assert "Error-Cause = Unsupported-Attribute" in got.stdout
    assert hub.changed == []


@pytest.mark.parametrize(
    ("server", "secret"),
    [("127.0.0.2", SECRET), ("127.0.0.1", "not-the-secret")],
    ids=["unconfigured-source", "wrong-secret"],
)
def test_no_answer_to_strangers(server: str, secret: str) -> None:
    hub = Hub()
    got = _with_listener(
        hub,
        lambda port: _send(port, "disconnect", {"Acct-Session-Id": '"S-1"'}, secret, 0.3),
        server=server,
    )
    assert "Received" not in got.stdout
    assert got.returncode != 0
    assert hub.ended == []
