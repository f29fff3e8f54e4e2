"""Async client of the agent's local API (used by the portal; never blocks its loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import TypeAdapter

from hub_agent.api.protocol import Request, RequestEnvelope, Response


class AgentUnavailable(RuntimeError):
    """The agent did not answer: the portal must fail closed (nobody is let through)."""


_REQ = TypeAdapter(Request)


async def call(socket_path: Path, request: Request, timeout: float = 3.0) -> Response:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path)), timeout
        )
    except (OSError, TimeoutError) as e:
        raise AgentUnavailable(f"agent socket {socket_path}: {e}") from None
    try:
        line = RequestEnvelope(request=request).model_dump_json().encode() + b"\n"
        writer.write(line)
        await writer.drain()
        data = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError) as e:
        raise AgentUnavailable(f"agent did not answer: {e}") from None
    finally:
        writer.close()
    if not data:
        raise AgentUnavailable("agent closed the connection")
    return Response.model_validate_json(data)
