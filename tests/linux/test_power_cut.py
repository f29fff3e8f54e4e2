"""Power cuts (issue 14): 20 times, everything on the hub dies at once while phones log in,
browse and log out, and the kernel is wiped as a reboot wipes it; after each start the hub
is exactly as its database says, within 5 s, and every phone can log in again.

One cut: kill -9 of every process in the hub's namespace (agent, portal, dnsmasq, nginx)
at a random moment of a login or a download, then the nft table and both tc trees are
deleted. Checked after each start:
- every session the database has as authorised is enforced again (the phone reaches the
  upstream) within 5 s of the agent's socket, and a phone without one is captive;
- a phone logs in again (its own code, a new one, or after a logout);
- usage never goes back (per session, bytes only grow across cuts);
- no code is consumed without its device through: every redeemed code has a session row
  for the device that redeemed it;
- ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import contextlib
import random
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from lab.netns import UPSTREAM, Client
from lab.users import portal_setpriv
from tests.linux.test_agent_e2e import (
    BIN,
    PORTAL,
    Hub,
    _login,
    _reaches_upstream,
)
from tests.linux.test_agent_e2e import hub as hub

pytestmark = [pytest.mark.root, pytest.mark.slow]

CUTS = 20
BACK_WITHIN_S = 5.0


def _issue(hub: Hub, count: int) -> list[str]:
    r = subprocess.run(
        [str(BIN / "hub-agent"), "vouchers", "issue", "--config", str(hub.config_path),
         "--plan", "heure", "--count", str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return r.stdout.split()


def _power_cut(hub: Hub) -> None:
    """Every process of the hub dies at once; the kernel forgets its tables (a reboot)."""
    pids = hub.lab.hub_exec("ip", "netns", "pids", hub.lab.hub_ns).stdout.split()
    subprocess.run(["kill", "-9", *pids], capture_output=True)
    for p in (hub.agent, hub.portal):
        p.wait(10)
    hub.lab.hub_exec("nft", "delete", "table", "inet", "relais")
    for dev in ("lan0", "wan0"):
        hub.lab.hub_exec("tc", "qdisc", "del", "dev", dev, "root")
    (hub.rundir / "agent.sock").unlink(missing_ok=True)


def _start(hub: Hub) -> float:
    hub.start_agent()
    up = time.monotonic()
    hub.portal = hub.lab.spawn(
        hub.lab.hub_ns,
        *portal_setpriv(),
        str(BIN / "captive-portal"),
        "--config",
        str(hub.config_path),
        log="portal.log",
    )
    hub.lab.wait_port(hub.lab.hub_ns, PORTAL.split("//")[1].split(":")[0], 8080, timeout=20)
    return up


def _db(hub: Hub) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{hub.rundir / 'data' / 'hub.db'}?mode=ro", uri=True)


def _authorised(hub: Hub) -> set[str]:
    with _db(hub) as db:
        rows = db.execute("SELECT mac FROM sessions WHERE state != 'ended'").fetchall()
    return {str(r[0]) for r in rows}


def _usage(hub: Hub) -> dict[int, int]:
    with _db(hub) as db:
        rows = db.execute("SELECT id, bytes_up + bytes_down FROM sessions").fetchall()
    return {int(i): int(b) for i, b in rows}


def _consumed_without_device(hub: Hub) -> list[tuple[str, str]]:
    with _db(hub) as db:
        rows = db.execute(
            "SELECT r.code, r.mac FROM redemptions r WHERE NOT EXISTS "
            "(SELECT 1 FROM sessions s WHERE s.code = r.code AND s.mac = r.mac)"
        ).fetchall()
    return [(str(c), str(m)) for c, m in rows]


def _integrity(hub: Hub) -> str:
    with _db(hub) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


class Browsing(threading.Thread):
    """Phones keep downloading while the hub lives and dies (usage to keep, connections
    cut in the middle)."""

    def __init__(self, clients: list[Client]) -> None:
        super().__init__(daemon=True)
        self.clients = clients
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for c in self.clients:
                c.curl(f"http://{UPSTREAM}/bytes/200000", "-o", "/dev/null", timeout=2)


@pytest.fixture
def rng() -> Iterator[random.Random]:
    seed = int(time.time())
    print(f"power-cut seed {seed}")
    yield random.Random(seed)


# 85-170 s on a quiet box; twenty agent starts on a loaded one took 550 s: a hang is still
# caught, a slow machine is not a failure.
@pytest.mark.timeout(900)
def test_twenty_power_cuts_while_phones_use_the_hub(hub: Hub, rng: random.Random) -> None:
    clients = hub.lab.clients
    codes = _issue(hub, 3 * CUTS)
    mine: dict[str, str] = {}  # device MAC -> the code it logs in with
    browsing = Browsing(clients)
    browsing.start()
    usage: dict[int, int] = {}
    try:
        for cut in range(CUTS):
            c = clients[cut % len(clients)]
            # something under way when the power goes: a login, a logout or a download
            action = rng.choice(("login", "login", "logout", "browse"))
            if action == "login":
                code = mine.get(c.mac) if rng.random() < 0.5 else None
                code = code or codes.pop()
                mine[c.mac] = code
                t = threading.Thread(target=lambda c=c, code=code: _try_login(c, code))
            elif action == "logout":
                t = threading.Thread(target=lambda c=c: _try_logout(c))
            else:
                t = threading.Thread(target=lambda c=c: _reaches_upstream(c))
            t.start()
            time.sleep(rng.uniform(0.0, 0.4))  # the cut lands anywhere in it
            _power_cut(hub)
            t.join(15)

            up = _start(hub)
            expected = _authorised(hub)
            # every stored session is enforced again, within BACK_WITHIN_S of the start
            for d in clients:
                if d.mac in expected:
                    while not _reaches_upstream(d):
                        waited = time.monotonic() - up
                        assert waited < BACK_WITHIN_S, (cut, d.name, hub.log("agent.log"))
                        time.sleep(0.1)
                else:
                    assert not _reaches_upstream(d), (cut, d.name)
            # usage never goes back
            now = _usage(hub)
            for sid, before in usage.items():
                assert now.get(sid, 0) >= before, (cut, sid, before, now.get(sid))
            usage = now
            assert _consumed_without_device(hub) == [], cut
            assert _integrity(hub) == "ok"
            # and the phone can log in again (its own code, or a new one once ended)
            code = mine.get(c.mac) or codes.pop()
            page = _relogin(hub, c, code)
            if "Vous êtes connecté" not in page:  # its pass ended (a cut mid-logout)
                mine[c.mac] = code = codes.pop()
                page = _relogin(hub, c, code)
            assert "Vous êtes connecté" in page, (cut, page[:600])
            assert _reaches_upstream(c), cut
    finally:
        browsing.stop.set()
        browsing.join(20)
    assert "api handler failed" not in hub.log("agent.log")


def _relogin(hub: Hub, c: Client, code: str) -> str:
    try:
        return _login(c, code)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- agent log ---\n{hub.log('agent.log')}") from None


def _try_login(c: Client, code: str) -> None:
    with contextlib.suppress(AssertionError):  # the power went out under it
        _login(c, code)


def _try_logout(c: Client) -> None:
    r = c.curl(PORTAL + "/status", "-o", "-", timeout=3)
    token = re.search(r'name="csrf" value="([^"]+)"', r.stdout)
    if token:
        c.curl(PORTAL + "/logout", "--data-urlencode", f"csrf={token.group(1)}", timeout=3)
