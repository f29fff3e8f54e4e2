"""Hubs and one centre on a real Mosquitto: the centre for tests/linux/test_roaming_lab.py
(whose hubs are real agents in lab namespaces), centre and hub for bench/bench_roaming.py.

No network namespaces here: each hub is the agent's real login path (``AgentHandler`` with its
``RoamingLink``, ``SessionService`` on its own SQLite file, the real ``Telemetry`` outbox
and MQTT link) with a kernel stand-in that records grants; the centre is the real
controller ingest (``Ingest``) and the real ``BalanceDesk`` on one registry.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from hub_agent.api.protocol import HealthView, Login, Response
from hub_agent.config import HubConfig, validate_config
from hub_agent.enforce.model import Counters, Grant
from hub_agent.handler import AgentHandler
from hub_agent.mqtt.core import BrokerUrl
from hub_agent.roaming_link import RoamingLink
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService
from hub_agent.store import open_db
from hub_agent.telemetry import db_path
from hub_agent.telemetry.outbox import OUTBOX
from hub_agent.telemetry.service import Telemetry
from provisioning import registry, vouchers
from provisioning.balances import BalanceDesk
from provisioning.controller.service import Ingest
from provisioning.statedir import StateDir

ROOT = Path(__file__).resolve().parents[1]


class Centre:
    def __init__(self, tmp: Path, broker_url: str) -> None:
        self.state = StateDir(tmp / "central")
        self.db_path = tmp / "central" / "registry.db"
        self.db = registry.open_registry(self.db_path)
        self.secret = vouchers.voucher_secret(self.state)
        self.key = self.state.signing_key()
        self.url = BrokerUrl.parse(broker_url)
        self.ingest = Ingest(self.db_path, self.url, client_id="ctl-roaming")
        self.desk = BalanceDesk(str(self.db_path), self.url, self.key, client_id="desk-roaming")

    def start(self) -> None:
        self.ingest.start()
        self.desk.start()

    def stop(self) -> None:
        self.desk.stop()
        self.ingest.stop()

    def issue(self, plan: str, count: int = 1) -> list[str]:
        return vouchers.issue_batch(self.db, self.secret, vouchers.catalogue()[plan], count).codes

    def used(self, code: str) -> int:
        db = registry.open_registry(self.db_path)
        try:
            row = db.execute("SELECT bytes_used FROM code_balances WHERE code = ?", [code])
            found = row.fetchone()
            return 0 if found is None else int(found[0])
        finally:
            db.close()


def _no_health() -> HealthView:
    raise NotImplementedError


class Kernel:
    def __init__(self) -> None:
        self.grants: dict[str, Grant] = {}

    def counters(self) -> dict[str, Counters]:
        return {}

    def reconcile(self, state: object) -> None:
        return None

    def authorize(self, grant: Grant) -> None:
        self.grants[grant.mac] = grant

    def deauthorize(self, mac: str) -> None:
        self.grants.pop(mac, None)


def hub_config(
    tmp: Path, hub_id: str, centre: Centre, broker_url: str, **roaming: Any
) -> HubConfig:
    data = yaml.safe_load((ROOT / "examples" / "hub.yaml").read_text())
    data["hub"]["id"] = hub_id
    data["data_dir"] = str(tmp / hub_id)
    data["trust"] = {"central_public_key": centre.key.public_b64, "voucher_secret": centre.secret}
    data["mqtt"]["url"] = broker_url
    data["mqtt"].pop("username", None)
    data["mqtt"].pop("password", None)
    data["mqtt"]["telemetry_interval_s"] = 60
    data["mqtt"]["drain_rate_per_s"] = 10_000
    data["roaming"] = {"report_every_s": 0.2, **roaming}
    return validate_config(data)


class Hub:
    """One hub's login path and links; ``start``/``stop`` bring its broker link up/down."""

    def __init__(self, cfg: HubConfig) -> None:
        self.config = cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_sessions_db(db_path(cfg.data_dir))
        self.sessions = SessionService(cfg, self.db)
        self.kernel = Kernel()
        self.macs: dict[str, str] = {}  # ip -> mac (the neighbour table's answer)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix=f"{cfg.hub.id}-worker")
        self.handler = AgentHandler(
            self.sessions, self.kernel, mac_for_ip=self.macs.get,
            health=_no_health, uplink_up=lambda: True,
            executor=self.worker,
        )  # fmt: skip
        self.telemetry: Telemetry | None = None
        self.roaming: RoamingLink | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def on_worker(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn)

    async def start(self, timeout_s: float = 10) -> None:
        tel = Telemetry(self.config, db=open_db(db_path(self.config.data_dir), OUTBOX), probe=None,
                        drain_rate_per_s=None)  # fmt: skip
        self.telemetry = tel
        self.roaming = RoamingLink(lambda: self.config, tel, self.sessions, lambda: self.kernel,
                                   self.on_worker)  # fmt: skip
        self.handler.roaming = self.roaming
        await tel.start()
        await asyncio.wait_for(tel.link.connected.wait(), timeout_s)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.roaming.run(self._stop))

    async def stop(self) -> None:
        """The uplink is gone: the link is down, logins get no answer."""
        self._stop.set()
        if self._task is not None:
            await self._task
        if self.telemetry is not None:
            await self.telemetry.stop()
        assert self.roaming is not None
        self.roaming.telemetry = _Down(self.roaming.telemetry)

    async def login(self, mac: str, code: str) -> Response:
        ip = next((i for i, m in self.macs.items() if m == mac), f"10.42.0.{10 + len(self.macs)}")
        self.macs[ip] = mac
        return await self.handler(Login(ip=ip, method="voucher", code=code))

    def use(self, mac: str, down_bytes: int, now: float) -> None:
        """The kernel counted ``down_bytes`` more for the device; one accounting pass."""
        self._counted = getattr(self, "_counted", {})
        self._counted[mac] = self._counted.get(mac, 0) + down_bytes
        actions = self.sessions.account({mac: Counters(mac, 0, self._counted[mac])}, now)
        for a in actions:
            if a.kind == "deauthorize":
                self.kernel.deauthorize(a.mac)
            elif a.grant is not None:
                self.kernel.authorize(a.grant)

    def close(self) -> None:
        self.worker.shutdown(wait=True)


class _Down:
    """A stopped telemetry as the roaming link sees it: never connected."""

    def __init__(self, tel: Any) -> None:
        self.events = tel.events
        self.link = _DownLink()


class _DownLink:
    def __init__(self) -> None:
        self.connected = asyncio.Event()

    def subscribe(self, *_: Any) -> None:
        return None
