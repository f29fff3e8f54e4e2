"""The agent's UNIX-socket API: real socket, permissions, validation, failure modes."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from hub_agent.api.client import AgentUnavailable, call
from hub_agent.api.protocol import Block, Login, Request, Response, Whoami
from hub_agent.api.server import start_server


async def _echo_handler(req: Request) -> Response:
    if isinstance(req, Login) and req.code == "BOOM":
        raise RuntimeError("handler bug")
    return Response(ok=True, message=req.op)


def test_round_trip_and_permissions(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "agent.sock"

    async def scenario() -> None:
        server = await start_server(sock, _echo_handler, group=None)
        async with server:
            mode = stat.S_IMODE(os.stat(sock).st_mode)
            assert mode == 0o660, oct(mode)
            r = await call(sock, Whoami(ip="10.42.0.101"))
            assert r.ok and r.message == "whoami"
            r = await call(sock, Block(mac="02:00:00:00:00:01", blocked=True))
            assert r.message == "block"
            # A handler failure answers an error and the server keeps serving.
            r = await call(sock, Login(ip="10.42.0.101", method="voucher", code="BOOM"))
            assert not r.ok and r.error == "internal"
            assert (await call(sock, Whoami(ip="10.42.0.102"))).ok

    asyncio.run(scenario())


def test_malformed_request_is_refused(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"

    async def scenario() -> bytes:
        server = await start_server(sock, _echo_handler, group=None)
        async with server:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(b'{"request": {"op": "format_disk"}}\n')
            await writer.drain()
            line = await reader.readline()
            writer.close()
            return line

    resp = Response.model_validate_json(asyncio.run(scenario()))
    assert not resp.ok and resp.error == "bad_request"


def test_missing_agent_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailable):
        asyncio.run(call(tmp_path / "nobody.sock", Whoami(ip="10.42.0.9"), timeout=0.5))
