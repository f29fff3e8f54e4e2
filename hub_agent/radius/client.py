"""The RADIUS client: Access-Request and Accounting-Request over asyncio UDP, with failover.

Each exchange uses its own connected UDP socket, so concurrent logins never share an
Identifier space and only the server's own replies reach it; nothing blocks the loop.
A server is tried ``1 + retries`` times, ``timeout_s`` each, before the next one; a server
that timed out is tried last for ``DEAD_S`` (so logins do not each wait for a dead primary)
but is still tried when all others fail, which also brings it back.
An ICMP "port unreachable" ends that server's tries at once.

Errors are translated here: callers see ``Accepted``/``Rejected`` or ``RadiusUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyrad import packet as rp

from hub_agent.config import HubConfig, RadiusServer
from hub_agent.radius import packets
from hub_agent.radius.accounting import SessionStart
from hub_agent.radius.params import Defaults, SessionParams, session_params

log = logging.getLogger(__name__)

DEAD_S = 30.0


class RadiusUnavailable(Exception):
    """No configured server answered (all timed out or were unreachable)."""


@dataclass(frozen=True)
class Accepted:
    params: SessionParams
    session_id: str  # Acct-Session-Id: pass it to the accounting hooks
    username: str
    classes: tuple[bytes, ...]  # Class values, echoed in accounting (RFC 2865 5.25)
    attrs: dict[str, list[Any]]  # the whole Access-Accept, for logs and later use
    server: str

    def start(self, mac: str, ip: str | None) -> SessionStart:
        """What ``Journal.start`` needs once the device is authorised."""
        return SessionStart(
            self.session_id, self.username, mac, ip, self.classes, self.params.interim_interval_s
        )


@dataclass(frozen=True)
class Rejected:
    message: str | None  # Reply-Message, if the server gave one


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


async def exchange(
    server: RadiusServer, port: int, make: Callable[[], rp.Packet]
) -> rp.Packet | None:
    """Send ``make()``'s packet up to 1 + retries times; the verified reply or None.

    ``make`` is called for each try: an Access-Request returns the same packet (RFC 2865:
    a retransmission keeps its Identifier and Authenticator), an Accounting-Request a new
    one (its Acct-Delay-Time changed, RFC 2866 5.2).
    """
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Reply, remote_addr=(server.address, port)
    )
    try:
        for _ in range(1 + server.retries):
            request = make()
            transport.sendto(request.RequestPacket())
            deadline = loop.time() + server.timeout_s
            while (left := deadline - loop.time()) > 0:
                try:
                    got = await asyncio.wait_for(proto.queue.get(), left)
                except TimeoutError:
                    break
                if isinstance(got, Exception):
                    log.warning("radius %s:%d unreachable: %s", server.address, port, got)
                    return None
                reply = _verified(request, got)
                if reply is not None:
                    return reply
        return None
    finally:
        transport.close()


def _verified(request: rp.Packet, data: bytes) -> rp.Packet | None:
    try:
        reply = request.CreateReply(packet=data)
    except (rp.PacketError, KeyError, ValueError) as e:
        log.warning("radius: undecodable reply dropped: %s", e)
        return None
    # Response Authenticator, and the Message-Authenticator whenever there is one
    if not request.VerifyReply(reply, data):
        log.warning("radius: reply failing verification dropped (id %d)", reply.id)
        return None
    return reply


@dataclass
class ServerPool:
    """The configured servers in failover order, remembering which timed out lately."""

    servers: Sequence[RadiusServer]
    clock: Callable[[], float] = time.monotonic
    dead_until: dict[int, float] = field(default_factory=dict)

    def order(self) -> list[RadiusServer]:
        now = self.clock()
        alive = [i for i in range(len(self.servers)) if self.dead_until.get(i, 0) <= now]
        dead = [i for i in range(len(self.servers)) if i not in alive]
        return [self.servers[i] for i in alive + dead]

    def failed(self, server: RadiusServer) -> None:
        self.dead_until[self.servers.index(server)] = self.clock() + DEAD_S

    def answered(self, server: RadiusServer) -> None:
        self.dead_until.pop(self.servers.index(server), None)

    async def send(
        self, port_of: Callable[[RadiusServer], int], build: Builder
    ) -> tuple[RadiusServer, rp.Packet]:
        """The first verified reply from the servers in order; RadiusUnavailable if none."""
        for server in self.order():
            reply = await exchange(server, port_of(server), build(server))
            if reply is not None:
                self.answered(server)
                return server, reply
            log.warning("radius server %s did not answer; trying the next", server.address)
            self.failed(server)
        raise RadiusUnavailable("no RADIUS server answered")


Builder = Callable[[RadiusServer], Callable[[], rp.Packet]]


class RadiusClient:
    """Authentication and accounting for one hub config (make a new one on a new config)."""

    def __init__(self, config: HubConfig) -> None:
        if config.radius is None:
            raise ValueError("the config has no radius section")
        self.settings = config.radius
        self.plans = tuple(config.plans)
        self.nas = packets.Nas.from_config(config)
        self.defaults = Defaults.from_settings(config.radius)
        servers = [config.radius.primary]
        if config.radius.secondary is not None:
            servers.append(config.radius.secondary)
        self.pool = ServerPool(servers)

    async def authenticate(
        self,
        username: str,
        password: str,
        mac: str,
        ip: str | None,
        session_id: str | None = None,
    ) -> Accepted | Rejected:
        """PAP Access-Request for a device; raises RadiusUnavailable when no server answers."""
        sid = session_id or packets.new_session_id()
        attrs = packets.access_request_attrs(self.nas, username, mac, ip, sid)

        def build(server: RadiusServer) -> Callable[[], rp.Packet]:
            pkt = packets.auth_packet(attrs, password, packets.secret_of(server))
            return lambda: pkt  # retransmissions are identical

        server, reply = await self.pool.send(lambda s: s.auth_port, build)
        got = packets.as_attrs(reply)
        if reply.code != rp.AccessAccept:
            # Access-Challenge (multi-round auth) is not something a web login can do
            message = got.get("Reply-Message", [None])[0]
            return Rejected(None if message is None else str(message))
        classes = tuple(
            v if isinstance(v, bytes) else str(v).encode() for v in got.get("Class", [])
        )
        return Accepted(
            params=session_params(got, self.plans, self.defaults),
            session_id=sid,
            username=username,
            classes=classes,
            attrs=got,
            server=server.address,
        )

    async def account(self, attrs_at: Callable[[float], packets.AttrList]) -> None:
        """Send one Accounting-Request; ``attrs_at(now)`` gives its attributes at each try
        (Acct-Delay-Time grows). Returns once a server acknowledged it."""

        def build(server: RadiusServer) -> Callable[[], rp.Packet]:
            secret = packets.secret_of(server)
            return lambda: packets.acct_packet(attrs_at(time.time()), secret)

        _, reply = await self.pool.send(lambda s: s.acct_port, build)
        if reply.code != rp.AccountingResponse:
            raise RadiusUnavailable(f"unexpected reply code {reply.code} to accounting")
