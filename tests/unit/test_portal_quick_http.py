"""The portal's HTTP protocol (captive_portal/quick_http.py) answers a cached device's probes
and splash from the parser's callback: on the wire, the same status, headers and bytes as
the ASGI path (stock uvicorn protocol, same app), only the date and the CSRF tokens'
second may differ; keep-alive, Connection: close, HEAD and pipelined requests behave as
uvicorn's own. A real uvicorn over TCP, the real agent behind its socket."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

import pytest
import uvicorn
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from captive_portal.app import create_app
from captive_portal.cli import server_configs
from captive_portal.fastpath import QuickAnswers
from captive_portal.quick_http import QUICK_PER_READ, quick_protocol
from captive_portal.responses import Raw
from captive_portal.routes.probes import PROBES
from captive_portal.settings import build_settings
from hub_agent.config import validate_config
from lab.broker import free_port
from tests.unit.real_agent import AgentThread, FakeClock, RealAgent, config_dict

_TOKEN = re.compile(rb"\d{10}\.[0-9a-f]{32}")
_DATE = re.compile(rb"\r\ndate: [^\r]*")
IP, MAC = "127.0.0.1", "02:00:00:00:0c:01"
HOST = "127.0.0.1"  # the portal's own host as the test reaches it (an extra host)


@contextmanager
def agent_for(tmp_path: Path) -> Iterator[tuple[RealAgent, dict[str, object]]]:
    sock = tmp_path / "agent.sock"
    data = config_dict(sock)
    agent = RealAgent(validate_config(data), {IP: MAC}, FakeClock())
    with agent, AgentThread(sock, agent):
        yield agent, data


class Counting:
    """QuickAnswers, counting the answers it gave at once (and the server, once started)."""

    def __init__(self, quick: QuickAnswers) -> None:
        self.quick, self.answered = quick, 0
        self.server: uvicorn.Server | None = None

    def __call__(self, scope: Scope) -> Raw | None:
        raw = self.quick(scope)
        self.answered += raw is not None
        return raw


@asynccontextmanager
async def portal(data: dict[str, object], quick: bool) -> AsyncIterator[tuple[int, Counting]]:
    config = validate_config(data)
    app = create_app(config, secret=b"s" * 32, settings=build_settings(config, extra_hosts=(HOST,)))
    counting = Counting(app.state.quick)
    cfg = server_configs(config, app, HOST, free_port())[0]
    if quick:
        cfg.http = quick_protocol(counting)
    else:
        cfg.http = "httptools"  # stock: every request through ASGI
    server = counting.server = uvicorn.Server(cfg)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the portal did not start"
        await asyncio.sleep(0.01)
    try:
        yield cfg.port, counting
    finally:
        server.should_exit = True
        await serving


async def exchange(port: int, raw: bytes, responses: int = 1) -> bytes:
    """Send ``raw``; read until ``responses`` answers are complete or the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(raw)
    await writer.drain()
    out = b""
    while out.count(b"HTTP/1.1 ") < responses or not _complete(out, responses):
        chunk = await asyncio.wait_for(reader.read(65536), 30)
        if not chunk:
            break
        out += chunk
    writer.close()
    return out


def _complete(out: bytes, responses: int) -> bool:
    """All ``responses`` answers have their whole body (content-length)."""
    rest = out
    for _ in range(responses):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        m = re.search(rb"content-length: (\d+)", head)
        n = int(m[1]) if m else 0
        if len(rest) < n:
            return False
        rest = rest[n:]
    return True


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode()


REQUESTS = [
    get("/"),
    get("/?lang=en"),
    get("/", extra="Accept-Language: en-GB,en;q=0.9\r\n"),
    get("/?code=%20abcd-efgh%20&lang=en"),
    get("/?code=" + "A" * 65),  # FastAPI's 422: not the fast path's
    get("/api/captive"),
    *(get(path) for path in PROBES),
    *(get(path, "HEAD") for path in PROBES),
]


def _masked(answer: bytes) -> bytes:
    return _TOKEN.sub(b"T", _DATE.sub(b"", answer))


def test_quick_answers_are_the_asgi_answers_on_the_wire(tmp_path: Path) -> None:
    async def scenario(data: dict[str, object]) -> None:
        async with (
            portal(data, quick=False) as (stock, _),
            portal(data, quick=True) as (
                port,
                counting,
            ),
        ):
            for request in REQUESTS:
                await exchange(port, request)  # the device's state is now cached
            counting.answered = 0
            for request in REQUESTS:
                want = _masked(await exchange(stock, request))
                assert _masked(await exchange(port, request)) == want, request
            # everything but the 422 was answered from the callback (the RFC 8908 API too:
            # its state, younger than FRESH_S, came in the same loop)
            assert counting.answered == len(REQUESTS) - 1

    with agent_for(tmp_path) as (_, data):
        asyncio.run(scenario(data))


def test_keep_alive_close_and_pipelining_on_the_quick_path(tmp_path: Path) -> None:
    async def scenario(data: dict[str, object]) -> None:
        async with portal(data, quick=True) as (port, counting):
            await exchange(port, get("/generate_204"))  # cached from here on
            counting.answered = 0
            # two requests in one write: two answers, in order, on the same connection
            both = await exchange(port, get("/generate_204") + get("/?lang=en"), responses=2)
            assert both.count(b"HTTP/1.1 302 Found") == 1 and both.count(b"HTTP/1.1 200 OK") == 1
            assert both.index(b"302 Found") < both.index(b"200 OK") and b"Relais" in both
            # Connection: close is answered with it, and the server closes (read ends)
            closed = await exchange(port, get("/ncsi.txt", extra="Connection: close\r\n"), 2)
            assert closed.count(b"HTTP/1.1 ") == 1 and b"\r\nconnection: close\r\n" in closed
            assert counting.answered == 3

    with agent_for(tmp_path) as (_, data):
        asyncio.run(scenario(data))


def test_a_logged_in_device_gets_the_success_bytes_at_once(tmp_path: Path) -> None:
    """The cache follows the agent's change feed: after a login, the quick path says 204."""

    async def scenario(agent: RealAgent, data: dict[str, object]) -> None:
        async with portal(data, quick=True) as (port, counting):
            assert b" 302 " in await exchange(port, get("/generate_204"))
            splash = (await exchange(port, get("/"))).decode()
            token = re.search(r'name="csrf" value="([^"]+)"', splash)
            assert token
            body = f"method=voucher&code={agent.issue('heure')}&csrf={token[1]}"
            post = (
                f"POST /login HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n\r\n" + body
            ).encode()
            assert b"HTTP/1.1 200 " in await exchange(port, post)
            counting.answered = 0
            assert (await exchange(port, get("/generate_204"))).startswith(b"HTTP/1.1 204 ")
            assert counting.answered == 1

    with agent_for(tmp_path) as (agent, data):
        asyncio.run(scenario(agent, data))


def test_a_long_pipeline_in_one_read_is_answered_in_order_partly_through_asgi(
    tmp_path: Path,
) -> None:
    """100 requests in one segment: every answer, in order; past QUICK_PER_READ of them
    uvicorn's ASGI path queues the rest (the loop is not held for the whole pipeline)."""

    async def scenario(data: dict[str, object]) -> None:
        async with portal(data, quick=True) as (port, counting):
            await exchange(port, get("/generate_204"))  # cached from here on
            counting.answered = 0
            paths = [path for path in PROBES] * 13  # 104 requests
            got = await exchange(port, b"".join(get(p) for p in paths), len(paths))
            assert got.count(b"HTTP/1.1 302 Found") == len(paths)
            assert QUICK_PER_READ <= counting.answered < len(paths)

    with agent_for(tmp_path) as (_, data):
        asyncio.run(scenario(data))


def test_a_client_that_reads_nothing_back_does_not_grow_the_server_s_buffer(
    tmp_path: Path,
) -> None:
    """Pipelined probes from a client that never reads: once the socket's buffers are full,
    the portal stops answering from the callback; the ASGI path waits for the client to
    read (uvicorn's flow control), so what the portal holds for it stays bounded instead of
    growing with every request."""
    n = 50_000  # ~7 MB of 302s: more than loopback's socket buffers hold

    async def scenario(data: dict[str, object]) -> None:
        async with portal(data, quick=True) as (port, counting):
            await exchange(port, get("/generate_204"))  # cached from here on
            server = counting.server
            assert server is not None
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
            _, writer = await asyncio.open_connection(sock=sock)
            try:
                writer.write(get("/generate_204") * n)  # and never read
                most, deadline = 0, time.monotonic() + 120
                while True:
                    (conn,) = server.server_state.connections
                    proto = cast(HttpToolsProtocol, conn)  # the portal's, quick_http's class
                    most = max(most, proto.transport.get_write_buffer_size())
                    if (proto.flow.write_paused and server.server_state.tasks) or (
                        server.server_state.total_requests >= n
                    ):
                        break
                    assert time.monotonic() < deadline, f"{counting.answered} answered"
                    await asyncio.sleep(0.01)
                # waiting on the client (an answer's task blocked on its drain), not all sent
                assert proto.flow.write_paused and server.server_state.total_requests < n
                assert most < 1 << 20, most  # uvicorn's high-water mark is 64 KiB
            finally:
                writer.close()  # the blocked answer ends with the connection

    with agent_for(tmp_path) as (_, data):
        asyncio.run(scenario(data))


@pytest.mark.parametrize("path", ["/generate_204", "/"])
def test_a_failing_quick_answer_falls_back_to_the_asgi_path(tmp_path: Path, path: str) -> None:
    def broken(scope: Scope) -> Raw | None:
        raise RuntimeError("boom")

    async def scenario(data: dict[str, object]) -> None:
        config = validate_config(data)
        settings = build_settings(config, extra_hosts=(HOST,))
        app = create_app(config, secret=b"s" * 32, settings=settings)
        cfg = server_configs(config, app, HOST, free_port())[0]
        cfg.http = quick_protocol(broken)
        server = uvicorn.Server(cfg)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            answer = await exchange(cfg.port, get(path))
            assert answer.startswith((b"HTTP/1.1 302 ", b"HTTP/1.1 200 ")), answer[:80]
        finally:
            server.should_exit = True
            await serving

    with agent_for(tmp_path) as (_, data):
        asyncio.run(scenario(data))


def test_the_socket_helper_sees_a_closed_connection() -> None:
    """``exchange`` stops at the server's close (what the Connection: close case relies on)."""

    async def scenario() -> bytes:
        srv = await asyncio.start_server(_answer_and_close, HOST, 0)
        port = srv.sockets[0].getsockname()[1]
        async with srv:
            return await exchange(port, b"x", responses=5)

    assert asyncio.run(scenario()) == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


async def _answer_and_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(1)
    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    await w.drain()
    w.close()
