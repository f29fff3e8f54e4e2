"""The CoA/Disconnect listener follows a pushed config without an agent restart (issue 20):
a new port is bound and the old one closed, new servers' secrets are the only ones heard,
and RADIUS turned off closes it. Real UDP on 127.0.0.1, the agent's own Accounts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pyrad import packet as rp

from hub_agent.accounts import Accounts
from hub_agent.config import HubConfig, validate_config
from hub_agent.config_changes import radius_step
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.radius.packets import dictionary
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService
from hub_agent.store import open_db

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
OLD_SECRET, NEW_SECRET = "old-s3cret", "new-s3cret"
SILENCE_S = 1.0  # how long "no answer" is waited for (a dropped request gets none)


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp: Path, version: int, radius: dict[str, Any] | None) -> HubConfig:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(version=version, data_dir=str(tmp / "data"), radius=radius)
    return validate_config(data)


def _radius(port: int, secret: str) -> dict[str, Any]:
    return {
        "primary": {"address": "127.0.0.1", "secret": secret},
        "coa_listen": "127.0.0.1",
        "coa_port": port,
    }


def ask(port: int, secret: str) -> str:
    """Disconnect-Request for a session the hub does not have: the NAK's Error-Cause,
    "silent" when the listener drops it (another secret), "closed" when nothing listens."""
    pkt = rp.CoAPacket(code=rp.DisconnectRequest, secret=secret.encode(), dict=dictionary())
    pkt.AddAttribute("Acct-Session-Id", "no-such-session")
    data = bytes(pkt.RequestPacket())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(SILENCE_S)
        s.connect(("127.0.0.1", port))
        s.send(data)
        try:
            raw = s.recv(4096)
        except ConnectionRefusedError:  # ICMP port unreachable: the port is closed
            return "closed"
        except TimeoutError:
            return "silent"
    reply = pkt.CreateReply(packet=raw)
    assert pkt.VerifyReply(reply, raw)
    assert reply.code == rp.DisconnectNAK
    return str(reply["Error-Cause"][0])


def test_the_coa_listener_rebinds_takes_new_secrets_and_closes(tmp_path: Path) -> None:
    p1, p2 = _udp_port(), _udp_port()
    v1 = _config(tmp_path, 1, _radius(p1, OLD_SECRET))
    v2 = _config(tmp_path, 2, _radius(p2, OLD_SECRET))
    v3 = _config(tmp_path, 3, {**_radius(p2, NEW_SECRET)})
    v4 = _config(tmp_path, 4, None)
    assert [radius_step(a, b) for a, b in ((v1, v2), (v2, v3), (v3, v4))] == [
        "rebind",
        "update",
        "stop",
    ]
    sessions = SessionService(v1, open_db(tmp_path / "hub.db", SESSIONS))
    enforcer = Enforcer(v1, dry_run=True, shaping=False)  # never reached: no such session

    async def inline(fn: Callable[[], Any]) -> Any:
        return fn()  # one thread: SQLite and the listener share the loop here

    async def run() -> list[Any]:
        async def asked(port: int, secret: str) -> str:
            return await asyncio.to_thread(ask, port, secret)

        on_worker: Callable[[Callable[[], Any]], Awaitable[Any]] = inline
        accounts = Accounts(v1, sessions.db, sessions, lambda: enforcer, on_worker, lambda: None)
        await accounts.start()
        seen = [await asked(p1, OLD_SECRET)]
        await accounts.set_config(v2, rebind=True)  # a new port
        seen += [await asked(p2, OLD_SECRET), await asked(p1, OLD_SECRET)]
        await accounts.set_config(v3, rebind=False)  # a new secret, same port
        seen += [await asked(p2, NEW_SECRET), await asked(p2, OLD_SECRET)]
        await accounts.stop()  # RADIUS off (daemon._follow_radius "stop")
        seen += [await asked(p2, NEW_SECRET)]
        return seen

    seen = asyncio.run(run())
    gone = "Session-Context-Not-Found"  # answered: heard, authenticated, no such session
    assert seen == [gone, gone, "closed", gone, "silent", "closed"]
