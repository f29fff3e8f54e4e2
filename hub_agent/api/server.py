"""The agent side of the local API: a UNIX socket server dispatching to a handler."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from hub_agent.api.protocol import Request, RequestEnvelope, Response

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
MAX_LINE = 16 * 1024


async def _serve_one(
    handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        if len(line) > MAX_LINE:
            resp = Response(ok=False, error="bad_request", message="request too large")
        else:
            try:
                req = RequestEnvelope.model_validate_json(line).request
            except ValidationError as e:
                resp = Response(ok=False, error="bad_request", message=str(e.errors()[:3]))
            else:
                try:
                    resp = await handler(req)
                except Exception:  # one bad request must not take the agent down
                    log.exception("api handler failed for op=%s", req.op)
                    resp = Response(ok=False, error="internal", message="agent error")
        writer.write(resp.model_dump_json().encode() + b"\n")
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    except asyncio.CancelledError:
        # the agent is stopping (a portal's long poll was waiting): asyncio's stream server
        # would log a cancelled connection task as an error ("Exception in callback")
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start_server(
    socket_path: Path, handler: Handler, group: str | None = "relais-portal"
) -> asyncio.Server:
    """Listen on ``socket_path`` (mode 0660; group ``group`` when it exists)."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    old = os.umask(0o117)
    try:
        server = await asyncio.start_unix_server(
            lambda r, w: _serve_one(handler, r, w), path=str(socket_path), limit=MAX_LINE * 2
        )
    finally:
        os.umask(old)
    if group is not None:
        with contextlib.suppress(KeyError, PermissionError):
            os.chown(socket_path, -1, grp.getgrnam(group).gr_gid)
    os.chmod(socket_path, 0o660)
    return server
