"""Mobile money for real: hub (agent + portal), phones, broker, centre and provider simulator.

Used by tests/linux/test_payments_lab.py and bench/bench_paid_to_online.py::

    phones ── hub ns (hub-agent run, captive-portal) ── upstream ns (Mosquitto :1883,
                                                        the "internet" on :80)
                                                          │ veth (link-local /30)
    this machine: hubctl payments run (callbacks on 127.0.0.1), the simulator (in process,
                  a real HTTP server on 127.0.0.1), the test's own MQTT clients

Two hubs are enrolled with the real ``hubctl enroll`` (per-hub broker users and the ACL
it renders); the first runs, the second's credentials exist to prove the ACL. The centre
talks to the simulator with the simulator's default credentials (PayGate for T-Money,
FedaPay for Flooz). Every wait is on a condition.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from hub_agent.config import validate_config
from hub_agent.mqtt.core import BrokerUrl
from hub_agent.telemetry import db_path
from lab.broker import free_port
from lab.centre import BIN as BIN
from lab.centre import MQTT_PORT, CentreLab, process_env
from lab.centre import Timeout as Timeout
from lab.centre import wait_for as wait_for
from lab.firstpacket import portal_get as _get
from lab.netns import HUB_LAN, UPSTREAM, Client, Lab
from lab.users import portal_setpriv
from provisioning.balances import BalanceDesk
from provisioning.payments.base import http_client
from provisioning.payments.service import FAULT_ENV
from provisioning.payments.simulator import SimConfig, Simulator
from provisioning.statedir import StateDir

PORTAL = f"http://{HUB_LAN}:8080"
HUB_A = "tg-lab-pay-a"
HUB_B = "tg-lab-pay-b"


def reaches_upstream(c: Client) -> bool:
    r = c.curl(f"http://{UPSTREAM}/", timeout=3)
    return r.returncode == 0 and "upstream internet" in r.stdout


@dataclass
class PayLab(CentreLab):
    TAG = "p"
    sim: Simulator
    callback_port: int
    desk: BalanceDesk | None = None  # the centre's balance answers (central codes at login)

    # --- building ------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def running(cls, clients: int, lan_prefix: int = 24) -> Iterator[PayLab]:
        lab = Lab.create(clients=clients, nat=False, lan_prefix=lan_prefix)
        cport = free_port()
        sim = Simulator(
            SimConfig(
                paygate_callback=f"http://127.0.0.1:{cport}/payments/callback/paygate",
                fedapay_webhook=f"http://127.0.0.1:{cport}/payments/callback/fedapay",
            )
        )
        sim.serve("127.0.0.1", 0)
        pl = cls(lab, sim, cport)
        try:
            pl.attach_centre()
            pl._enroll()
            pl.start_broker()
            pl._write_hub_config()
            pl.start_centre()
            pl.start_desk()
            pl.start_agent()
            pl.procs["portal"] = lab.spawn(
                lab.hub_ns, *portal_setpriv(), str(BIN / "captive-portal"), "--config",
                str(pl.config_path), log="portal.log",
            )  # fmt: skip
            lab.wait_port(lab.hub_ns, HUB_LAN, 8080, timeout=20)
            c = lab.clients[0]
            offered = lambda: 'action="/pay"' in _get(c, PORTAL + "/")[2]  # noqa: E731
            wait_for("mobile money offered on the splash", offered, 30, every=0.2)
            yield pl
        finally:
            pl.close()

    def _enroll(self) -> None:
        self.central_settings()
        for hub_id in (HUB_A, HUB_B):
            self.hubctl("enroll", hub_id, "--kind", "mairie", "--name", f"Lab {hub_id}")
        StateDir(self.central).write_secret("payments", {
            "networks": {"tmoney": "paygate", "flooz": "fedapay"},
            "paygate": {"auth_token": "sim-paygate-token", "base_url": self.sim.url},
            "fedapay": {"secret_key": "sk_sandbox_sim", "webhook_secret": "wh_sandbox_sim",
                        "base_url": self.sim.url},
        })  # fmt: skip

    def _write_hub_config(self) -> None:
        doc = self.host_vars(HUB_A)["relais_hub_config"]
        hub_dir = self.config_path.parent
        (hub_dir / "run").mkdir(parents=True)
        for d in (hub_dir, hub_dir / "run"):
            os.chmod(d, 0o755)
        doc["data_dir"] = str(hub_dir / "data")
        doc["portal"]["agent_socket"] = str(hub_dir / "run" / "agent.sock")
        doc.setdefault("staff", {})["devices"] = []
        doc["network"]["wan"]["dns_servers"] = [UPSTREAM]
        # A central code's login waits this long for the centre's balance answer: long
        # enough on the loaded lab box that a test sees the centre's word, not the offline
        # allowance.
        doc.setdefault("roaming", {})["query_timeout_ms"] = 5000
        validate_config(doc, source="pay lab hub config")
        self.config_path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")

    # --- processes -------------------------------------------------------------------
    def start_centre(self, fault: str | None = None) -> None:
        """``fault``: the service's fault point where it kills itself with SIGKILL
        (provisioning.payments.service.fault_point)."""
        log = open(self.lab.workdir / "centre.log", "ab")  # noqa: SIM115
        env = process_env() | ({FAULT_ENV: fault} if fault else {})
        self.procs["centre"] = subprocess.Popen(
            [str(BIN / "hubctl"), "--state", str(self.central), "payments", "run",
             "--http-host", "127.0.0.1", "--http-port", str(self.callback_port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
        wait_for("centre's callback port", self._centre_listening, 20)

    def start_desk(self) -> None:
        user, password = StateDir(self.central).controller_credentials()
        url = BrokerUrl.parse(f"mqtt://{self.ctl_ip}:{MQTT_PORT}").with_credentials(user, password)
        state = StateDir(self.central)
        self.desk = BalanceDesk(str(state.registry_path), url, state.signing_key(),
                                client_id="paylab-desk")  # fmt: skip
        self.desk.start()

    def _centre_listening(self) -> bool:
        p = self.procs["centre"]
        assert p.poll() is None, self.log("centre.log")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.callback_port)) == 0

    def kill_centre(self) -> None:
        p = self.procs["centre"]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)

    def kill_agent(self) -> None:
        p = self.procs["agent"]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)

    def close(self) -> None:
        if self.desk is not None:
            self.desk.stop()
        self.sim.close()
        super().close()

    # --- the phone -------------------------------------------------------------------
    def buy(self, c: Client, phone: str, network: str, plan: str = "heure") -> str:
        """The splash's mobile-money form, as a browser posts it; the purchase's ref."""
        _, _, page = _get(c, PORTAL + "/")
        box = page[page.find('action="/pay"') :]
        token = re.search(r'name="csrf" value="([^"]+)"', box)
        assert token, page[:800]
        code, _, body = _get(
            c, PORTAL + "/pay", "--data-urlencode", f"plan={plan}", "--data-urlencode",
            f"phone={phone}", "--data-urlencode", f"network={network}", "--data-urlencode",
            f"csrf={token.group(1)}", timeout=10,
        )  # fmt: skip
        m = re.search(r"url=/pay/([A-Za-z0-9_-]+)", body)
        assert code == "200" and m, body[:800]
        return m.group(1)

    def pay_page(self, c: Client, ref: str) -> tuple[str, str]:
        code, _, body = _get(c, f"{PORTAL}/pay/{ref}")
        return code, body

    def wait_result(self, c: Client, ref: str, timeout: float = 20) -> tuple[str, str]:
        """The purchase's page once it stopped waiting (no refresh any more)."""

        def done() -> tuple[str, str] | None:
            code, body = self.pay_page(c, ref)
            return (code, body) if 'http-equiv="refresh"' not in body else None

        return wait_for(f"purchase {ref} settled", done, timeout, every=0.2)

    # --- the provider's side -----------------------------------------------------------
    def sim_payment(self, phone: str, timeout: float = 15) -> dict[str, Any]:
        """The simulator's payment for ``phone`` once the centre started it there."""

        # Read in this process (the simulator runs here): twenty phones each listing every
        # payment over HTTP 20 times a second loaded this process's GIL, and with it the
        # simulator's answers to the centre, more than anything measured (the bench).
        def find() -> dict[str, Any] | None:
            with self.sim.lock:
                mine = [asdict(p) for p in self.sim.payments.values()
                        if p.phone.endswith(phone[-8:])]  # fmt: skip
            assert len(mine) <= 1, mine  # one payment per phone in these tests
            return mine[0] if mine and mine[0]["pushed"] else None  # the USSD prompt went

        return wait_for(f"payment of {phone} at the provider", find, timeout, every=0.1)

    def play(self, action: str, **body: Any) -> dict[str, Any]:
        r = http_client().post(f"{self.sim.url}/_sim/{action}", json=body, timeout=15)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    # --- the centre's and the hub's records ----------------------------------------------
    def centre_rows(self, ref: str | None = None) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(StateDir(self.central).registry_path)) as db:
            db.row_factory = sqlite3.Row
            q = "SELECT * FROM payments" + (" WHERE ref = ?" if ref else "")
            return [dict(r) for r in db.execute(q, [ref] if ref else [])]

    def centre_row(self, hub_request_id: str) -> dict[str, Any] | None:
        rows = [r for r in self.centre_rows() if r["request_id"] == hub_request_id]
        assert len(rows) <= 1, rows
        return rows[0] if rows else None

    def hub_query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        path = db_path(self.config_path.parent / "data")
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
            return list(db.execute(sql, params))
