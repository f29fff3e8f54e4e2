"""Dynamic Authorization: the pure decision, and the listener's answers to packets built with
pyrad (authentication, duplicates, Error-Cause), without a network."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from pyrad import packet as rp

from hub_agent.config import HubConfig, validate_config
from hub_agent.radius import coa
from hub_agent.radius.coa import Act, CoaListener, Nak, Target, decide
from hub_agent.radius.packets import Nas, dictionary
from hub_agent.radius.params import Change

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
SECRET = "s3cret-s3cret"


def _config() -> HubConfig:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["radius"] = {"primary": {"address": "192.0.2.10", "secret": SECRET}}
    return validate_config(data)


CONFIG = _config()
NAS = Nas.from_config(CONFIG)
PLANS = CONFIG.plans


def _decide(code: int, attrs: dict[str, list[Any]], unknown: tuple[object, ...] = ()) -> Any:
    return decide(code, attrs, unknown, NAS, PLANS)


def test_decide_disconnect() -> None:
    assert _decide(rp.DisconnectRequest, {"Acct-Session-Id": ["S"]}) == Act(
        True, Target(session_id="S")
    )
    assert _decide(rp.DisconnectRequest, {"Calling-Station-Id": ["02-00-00-00-00-0A"]}) == Act(
        True, Target(mac="02:00:00:00:00:0a")
    )
    assert _decide(rp.DisconnectRequest, {"Event-Timestamp": [1]}) == Nak(coa.MISSING_ATTRIBUTE)
    assert _decide(rp.DisconnectRequest, {"User-Name": ["a"], "Session-Timeout": [5]}) == Nak(
        coa.UNSUPPORTED_ATTRIBUTE
    )
    assert _decide(rp.DisconnectRequest, {"User-Name": ["a"]}, (26,)) == Nak(
        coa.UNSUPPORTED_ATTRIBUTE
    )
    assert _decide(
        rp.DisconnectRequest, {"User-Name": ["a"], "NAS-Identifier": ["other-hub"]}
    ) == Nak(coa.NAS_MISMATCH)
    assert _decide(rp.DisconnectRequest, {"Calling-Station-Id": ["nonsense"]}) == Nak(
        coa.INVALID_VALUE
    )


def test_decide_coa() -> None:
    got = _decide(rp.CoARequest, {"User-Name": ["a"], "ChilliSpot-Max-Total-Octets": [1000]})
    assert got == Act(False, Target(username="a"), Change(quota_bytes=1000))
    assert _decide(rp.CoARequest, {"User-Name": ["a"]}) == Nak(coa.INVALID_REQUEST)
    assert _decide(rp.CoARequest, {"User-Name": ["a"], "Filter-Id": ["gold"]}) == Nak(
        coa.INVALID_VALUE
    )
    assert _decide(rp.CoARequest, {"User-Name": ["a"], "Service-Type": ["Authorize-Only"]}) == (
        Nak(coa.UNSUPPORTED_SERVICE)
    )


def _request(code: int, secret: str = SECRET, ma: bool = False, **attrs: Any) -> bytes:
    pkt = rp.CoAPacket(code=code, secret=secret.encode(), dict=dictionary())
    for k, v in attrs.items():
        pkt.AddAttribute(k.replace("_", "-"), v)
    if ma:
        pkt.add_message_authenticator()
    return bytes(pkt.RequestPacket())


class _Hub:
    def __init__(self, found: bool = True, fail: bool = False) -> None:
        self.calls: list[Any] = []
        self.found = found
        self.fail = fail

    async def on_disconnect(self, t: Target) -> bool:
        self.calls.append(t)
        await asyncio.sleep(0)  # let a retransmission arrive meanwhile
        if self.fail:
            raise RuntimeError("boom")
        return self.found

    async def on_change(self, t: Target, c: Change) -> bool:
        self.calls.append((t, c))
        return self.found


def _answer(hub: _Hub, data: bytes, source: str = "192.0.2.10") -> rp.Packet | None:
    listener = CoaListener(CONFIG, hub.on_disconnect, hub.on_change, clock=lambda: 1e9)
    raw = asyncio.run(listener.answer(data, source))
    if raw is None:
        return None
    req = rp.CoAPacket(packet=data, secret=SECRET.encode(), dict=dictionary())
    reply = req.CreateReply(packet=raw)
    assert req.VerifyReply(reply, raw)  # Response Authenticator (and MA when present)
    return reply


def test_listener_acks_and_naks() -> None:
    hub = _Hub()
    reply = _answer(hub, _request(rp.DisconnectRequest, ma=True, Acct_Session_Id="S"))
    assert reply is not None and reply.code == rp.DisconnectACK
    assert reply.message_authenticator  # answered in kind
    assert hub.calls == [Target(session_id="S")]

    reply = _answer(_Hub(found=False), _request(rp.CoARequest, User_Name="a", Idle_Timeout=60))
    assert reply is not None and reply.code == rp.CoANAK
    assert reply["Error-Cause"] == ["Session-Context-Not-Found"]

    reply = _answer(_Hub(fail=True), _request(rp.DisconnectRequest, User_Name="a"))
    assert reply is not None and reply["Error-Cause"] == ["Resources-Unavailable"]


def test_listener_is_silent_to_strangers_and_forgeries() -> None:
    hub = _Hub()
    assert _answer(hub, _request(rp.DisconnectRequest, User_Name="a"), "192.0.2.99") is None
    assert _answer(hub, _request(rp.DisconnectRequest, "wrong-secret", User_Name="a")) is None
    assert _answer(hub, b"\x28\x01\x00") is None  # truncated
    stale = _request(rp.DisconnectRequest, User_Name="a", Event_Timestamp=1)
    assert _answer(hub, stale) is None  # replay window
    assert hub.calls == []


def test_a_retransmission_gets_the_same_answer_once() -> None:
    hub = _Hub()
    listener = CoaListener(CONFIG, hub.on_disconnect, hub.on_change)
    data = _request(rp.DisconnectRequest, User_Name="a")

    async def thrice() -> list[bytes | None]:
        # two copies while the (slow) callback runs, one after it answered
        both = await asyncio.gather(*(listener.answer(data, "192.0.2.10") for _ in range(2)))
        return [*both, await listener.answer(data, "192.0.2.10")]

    answers = asyncio.run(thrice())
    assert answers[0] is not None and answers.count(answers[0]) == 3
    assert len(hub.calls) == 1
