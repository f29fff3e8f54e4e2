"""Dynamic Authorization (RFC 5176): Disconnect-Request and CoA-Request on UDP 3799.

Only the configured servers may ask, each with its own secret: a datagram from any other
address, or whose Request Authenticator (or Message-Authenticator, when present) does not
verify, is dropped without an answer, as RFC 5176 3.3/5.1 say. What to do is decided by a
pure function (``decide``) from the request's attributes; the session itself is ended or
changed by callbacks the agent passes in, which say whether they found the session.

Error-Cause (RFC 5176 3.5) in a NAK:
  401 Unsupported-Attribute   an attribute this hub cannot act on (or not in its dictionary)
  402 Missing-Attribute       no session identification at all
  403 NAS-Identification-Mismatch  NAS-Identifier (or NAS-IP-Address) is not this hub
  404 Invalid-Request         a CoA that changes nothing
  405 Unsupported-Service     Service-Type (e.g. Authorize-Only) this hub does not do
  407 Invalid-Attribute-Value a bad MAC or a plan this hub does not have
  503 Session-Context-Not-Found   the callback found no such session
  506 Resources-Unavailable   the callback failed
A retransmitted request (same source, Identifier and Authenticator) gets the same answer
without the callback running twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pyrad import packet as rp

from hub_agent.config import HubConfig, Plan, normalise_mac
from hub_agent.radius import packets
from hub_agent.radius.params import Change, change_from, named_plan

log = logging.getLogger(__name__)

IDENTIFY = frozenset({"User-Name", "Acct-Session-Id", "Calling-Station-Id", "Framed-IP-Address"})
NAS_ATTRS = frozenset({"NAS-Identifier", "NAS-IP-Address", "NAS-IPv6-Address"})
HARMLESS = frozenset({"Event-Timestamp", "Proxy-State", "Reply-Message", "Acct-Terminate-Cause"})
CHANGES = frozenset(
    {
        "Session-Timeout",
        "Idle-Timeout",
        "WISPr-Bandwidth-Max-Up",
        "WISPr-Bandwidth-Max-Down",
        "ChilliSpot-Bandwidth-Max-Up",
        "ChilliSpot-Bandwidth-Max-Down",
        "ChilliSpot-Max-Total-Octets",
        "Filter-Id",
        "Class",
    }
)
REPLAY_WINDOW_S = 300  # RFC 5176 3.4: Event-Timestamp outside the window is dropped
DUPLICATE_S = 30.0

UNSUPPORTED_ATTRIBUTE = 401
MISSING_ATTRIBUTE = 402
NAS_MISMATCH = 403
INVALID_REQUEST = 404
UNSUPPORTED_SERVICE = 405
INVALID_VALUE = 407
SESSION_NOT_FOUND = 503
RESOURCES_UNAVAILABLE = 506


@dataclass(frozen=True)
class Target:
    """Which session a request means; every given field must match."""

    session_id: str | None = None
    username: str | None = None
    mac: str | None = None  # normalised lower-case colon form
    ip: str | None = None


@dataclass(frozen=True)
class Act:
    disconnect: bool
    target: Target
    change: Change | None = None


@dataclass(frozen=True)
class Nak:
    error_cause: int


# The agent's side: True when the session was found (and ended or changed).
OnDisconnect = Callable[[Target], Awaitable[bool]]
OnChange = Callable[[Target, Change], Awaitable[bool]]


def _first(attrs: Mapping[str, Sequence[Any]], name: str) -> str | None:
    values = attrs.get(name)
    return None if not values else str(values[0])


def decide(
    code: int,
    attrs: Mapping[str, Sequence[Any]],
    unknown: Sequence[object],
    nas: packets.Nas,
    plans: Sequence[Plan],
) -> Act | Nak:
    """What a verified Disconnect-Request or CoA-Request asks of this hub."""
    disconnect = code == rp.DisconnectRequest
    if "Service-Type" in attrs:
        return Nak(UNSUPPORTED_SERVICE)  # Authorize-Only needs a re-auth this NAS cannot do
    allowed = IDENTIFY | NAS_ATTRS | HARMLESS | (frozenset() if disconnect else CHANGES)
    if unknown or any(name not in allowed for name in attrs):
        return Nak(UNSUPPORTED_ATTRIBUTE)
    nas_id = _first(attrs, "NAS-Identifier")
    if nas_id is not None and nas_id != nas.identifier:
        return Nak(NAS_MISMATCH)
    if not IDENTIFY & attrs.keys():
        return Nak(MISSING_ATTRIBUTE)
    mac = _first(attrs, "Calling-Station-Id")
    if mac is not None:
        try:
            mac = normalise_mac(mac)
        except ValueError:
            return Nak(INVALID_VALUE)
    target = Target(
        session_id=_first(attrs, "Acct-Session-Id"),
        username=_first(attrs, "User-Name"),
        mac=mac,
        ip=_first(attrs, "Framed-IP-Address"),
    )
    if disconnect:
        return Act(True, target)
    if ("Filter-Id" in attrs or "Class" in attrs) and named_plan(attrs, plans) is None:
        return Nak(INVALID_VALUE)
    change = change_from(attrs, plans)
    if change.empty():
        return Nak(INVALID_REQUEST)
    return Act(False, target, change)


def stale(attrs: Mapping[str, Sequence[Any]], now: float) -> bool:
    ts = attrs.get("Event-Timestamp") or ()
    return bool(ts) and isinstance(ts[0], int) and abs(now - ts[0]) > REPLAY_WINDOW_S


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: CoaListener) -> None:
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        task = asyncio.ensure_future(self.listener.handle(data, addr))
        self.listener.tasks.add(task)
        task.add_done_callback(self.listener.tasks.discard)


class CoaListener:
    """Listens for Disconnect/CoA from the configured servers and calls the callbacks."""

    def __init__(
        self,
        config: HubConfig,
        on_disconnect: OnDisconnect,
        on_change: OnChange,
        clock: Callable[[], float] = time.time,
    ) -> None:
        r = config.radius
        if r is None:
            raise ValueError("the config has no radius section")
        self.address = r.coa_listen
        self.port = r.coa_port
        self.set_config(config)
        self.on_disconnect = on_disconnect
        self.on_change = on_change
        self.clock = clock
        self.tasks: set[asyncio.Future[None]] = set()
        # (source, Identifier, Authenticator) -> (when, the answer, pending while the
        # callback runs so a retransmission arriving meanwhile waits for the same answer)
        self.answered: dict[tuple[Any, int, bytes], tuple[float, asyncio.Future[bytes]]] = {}
        self.protocol: _Protocol | None = None

    def set_config(self, config: HubConfig) -> None:
        """Who may ask and what a request may name, from a new config (the socket stays:
        a new address or port is a new listener)."""
        r = config.radius
        if r is None:
            raise ValueError("the config has no radius section")
        servers = [s for s in (r.primary, r.secondary) if s is not None]
        self.secrets = {s.address: packets.secret_of(s) for s in servers}
        self.nas = packets.Nas.from_config(config)
        self.plans = tuple(config.plans)

    async def start(self, port: int | None = None) -> int:
        """Bind (``port`` overrides the config's, 0: any free port); the bound port."""
        loop = asyncio.get_running_loop()
        bind_port = self.port if port is None else port
        if bind_port is None:
            raise ValueError("radius.coa_port is not set")
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.address, bind_port)
        )
        self.protocol = protocol
        return int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        for task in self.tasks:
            task.cancel()

    async def handle(self, data: bytes, addr: Any) -> None:
        reply = await self.answer(data, addr[0])
        if reply is not None and self.protocol is not None and self.protocol.transport:
            self.protocol.transport.sendto(reply, addr)

    async def answer(self, data: bytes, source: str) -> bytes | None:
        """The reply datagram, or None to stay silent."""
        secret = self.secrets.get(source)
        if secret is None:
            log.warning("radius CoA from unconfigured %s dropped", source)
            return None
        try:
            req = rp.CoAPacket(packet=data, secret=secret, dict=packets.dictionary())
        except (rp.PacketError, KeyError, ValueError) as e:
            log.warning("radius CoA from %s undecodable: %s", source, e)
            return None
        if req.code not in (rp.DisconnectRequest, rp.CoARequest):
            return None
        if not req.VerifyCoARequest() or (
            req.message_authenticator and not req.verify_message_authenticator()
        ):
            log.warning("radius CoA from %s failed authentication (secret?)", source)
            return None
        now = self.clock()
        self.answered = {k: v for k, v in self.answered.items() if v[0] > now - DUPLICATE_S}
        key = (source, req.id, req.authenticator)
        if key in self.answered:
            return await asyncio.shield(self.answered[key][1])
        attrs = packets.as_attrs(req)
        if stale(attrs, now):
            log.warning("radius CoA from %s dropped: Event-Timestamp out of window", source)
            return None
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.answered[key] = (now, answer)
        try:
            error_cause = await self._act(req.code, attrs, packets.unknown_attrs(req))
        except BaseException:  # cancelled: a retransmission is handled afresh
            answer.cancel()
            del self.answered[key]
            raise
        answer.set_result(self._reply(req, error_cause))
        return answer.result()

    async def _act(self, code: int, attrs: dict[str, list[Any]], unknown: Sequence[object]) -> int:
        """0 for an ACK, else the Error-Cause."""
        decision = decide(code, attrs, unknown, self.nas, self.plans)
        if isinstance(decision, Nak):
            return decision.error_cause
        try:
            if decision.disconnect:
                found = await self.on_disconnect(decision.target)
            else:
                assert decision.change is not None
                found = await self.on_change(decision.target, decision.change)
        except Exception:
            log.exception("radius CoA callback failed")
            return RESOURCES_UNAVAILABLE
        return 0 if found else SESSION_NOT_FOUND

    @staticmethod
    def _reply(req: rp.CoAPacket, error_cause: int) -> bytes:
        reply = req.CreateReply()
        if error_cause:
            reply.code = rp.DisconnectNAK if req.code == rp.DisconnectRequest else rp.CoANAK
            reply.AddAttribute("Error-Cause", error_cause)
        if req.message_authenticator:  # answer in kind (RFC 5176 3.3)
            reply.add_message_authenticator()
        return bytes(reply.ReplyPacket())
