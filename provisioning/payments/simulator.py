"""A mobile-money provider simulator: PayGate Global and FedaPay wire formats on one port.

For the lab, the demo and the tests (``hubctl payments simulator --port P``). It answers
the requests the provider modules make (paygate.py, fedapay.py document the formats) and
plays the merchant dashboard's callbacks: PayGate's unsigned JSON to ``paygate_callback``,
FedaPay's webhook signed ``X-FEDAPAY-SIGNATURE`` to ``fedapay_webhook``.

The phone is played through ``/_sim/...`` (JSON or an HTML form at ``/``):

* ``POST /_sim/confirm {ref | phone, amount?}``: the phone types its PIN (``amount``:
  pay a different amount); the callback follows unless ``"callback": false``;
* ``POST /_sim/refuse {ref, reason?}``, ``POST /_sim/expire {ref}``;
* ``POST /_sim/callback {ref, copies?, forged?}``: send the callback again (duplicates),
  or a forged one (FedaPay: a bad signature; PayGate: claims "paid" while still pending);
* ``POST /_sim/faults {delay_s?, fail_next?}``: answer API calls slowly, or the next N
  with HTTP 503;
* ``GET /_sim/payments``: every payment, as JSON.
"""

from __future__ import annotations

import html
import itertools
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from provisioning.payments.base import http_client
from provisioning.payments.fedapay import MODES, signature_header
from provisioning.payments.web import Server


@dataclass
class SimConfig:
    paygate_token: str = "sim-paygate-token"
    fedapay_secret_key: str = "sk_sandbox_sim"
    fedapay_webhook_secret: str = "wh_sandbox_sim"
    paygate_callback: str = ""  # the merchant dashboard's callback URLs
    fedapay_webhook: str = ""


@dataclass
class SimPayment:
    provider: str  # paygate | fedapay
    ref: str  # ours: identifier / merchant_reference
    amount: int
    phone: str
    network: str
    description: str
    status: str = "pending"  # pending | paid | cancelled | expired (PayGate words)
    paid_amount: int | None = None
    tx_reference: str = ""
    fedapay_id: int = 0
    token: str = ""
    pushed: int = 0  # USSD prompts sent (a second one means a double charge risk)
    payment_reference: str = ""
    created_at: float = field(default_factory=time.time)


_FEDA_STATUS = {"pending": "pending", "paid": "approved", "cancelled": "declined",
                "expired": "expired"}  # fmt: skip
_PAYGATE_CODE = {"paid": 0, "pending": 2, "expired": 4, "cancelled": 6}


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.payments: dict[str, SimPayment] = {}
        self._ids = itertools.count(1001)
        self.delay_s = 0.0
        self.fail_next = 0
        self.server: ThreadingHTTPServer | None = None

    # --- playing the phone --------------------------------------------------------------
    def find(self, ref: str | None = None, phone: str | None = None) -> SimPayment:
        with self.lock:
            if ref:
                return self.payments[ref]
            pending = [p for p in self.payments.values() if p.status == "pending"]
            if phone:
                pending = [p for p in pending if p.phone.endswith(phone[-8:])]
            if not pending:
                raise KeyError("no pending payment")
            return max(pending, key=lambda p: p.created_at)

    def settle(self, p: SimPayment, status: str, amount: int | None = None) -> None:
        with self.lock:
            p.status = status
            if status == "paid":
                p.paid_amount = p.amount if amount is None else amount
                p.payment_reference = p.payment_reference or f"OP{secrets.token_hex(4).upper()}"

    def callback(self, p: SimPayment, forged: bool = False) -> int:
        """Send the merchant callback for ``p`` now; the HTTP status it got (0: none)."""
        if p.provider == "paygate":
            url = self.config.paygate_callback
            state = p if not forged else SimPayment(**{**asdict(p), "status": "paid"})
            if state.status != "paid" or not url:
                return 0  # PayGate calls back on payments only
            body = json.dumps({
                "tx_reference": p.tx_reference, "identifier": p.ref,
                "payment_reference": state.payment_reference or "OPFORGED",
                "amount": state.paid_amount or p.amount, "datetime": _now_text(),
                "payment_method": "FLOOZ" if p.network == "flooz" else "T-Money",
                "phone_number": p.phone,
            }).encode()  # fmt: skip
            headers = {"Content-Type": "application/json"}
        else:
            url = self.config.fedapay_webhook
            if not url:
                return 0
            entity = self.fedapay_entity(p)
            if forged:
                entity["status"] = "approved"
            event = {"name": f"transaction.{entity['status']}", "object": "transaction",
                     "entity": entity}  # fmt: skip
            body = json.dumps(event).encode()
            secret = self.config.fedapay_webhook_secret
            sig = signature_header(secret if not forged else "wh_not_the_secret", body,
                                   int(time.time()))  # fmt: skip
            headers = {"Content-Type": "application/json", "X-FEDAPAY-SIGNATURE": sig}
        try:
            return http_client().post(url, content=body, headers=headers, timeout=10).status_code
        except httpx.HTTPError:
            return 0

    def fedapay_entity(self, p: SimPayment) -> dict[str, Any]:
        return {
            "klass": "v1/transaction", "id": p.fedapay_id, "reference": f"trx_{p.fedapay_id}",
            "amount": p.paid_amount if p.paid_amount is not None else p.amount,
            "description": p.description, "status": _FEDA_STATUS[p.status],
            "merchant_reference": p.ref, "custom_metadata": {"relais_ref": p.ref},
            "currency_id": 1, "currency": {"iso": "XOF"}, "mode": MODES.get(p.network),
            "created_at": _now_text(p.created_at), "updated_at": _now_text(),
        }  # fmt: skip

    def control(self, action: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        if action == "faults":
            with self.lock:
                self.delay_s = float(body.get("delay_s", self.delay_s))
                self.fail_next = int(body.get("fail_next", self.fail_next))
            return 200, {"delay_s": self.delay_s, "fail_next": self.fail_next}
        try:
            p = self.find(body.get("ref") or None, body.get("phone") or None)
        except KeyError:
            return 404, {"error": "no such payment"}
        codes: list[int] = []
        if action == "confirm":
            amount = body.get("amount")
            self.settle(p, "paid", int(amount) if amount not in (None, "") else None)
        elif action == "refuse":
            self.settle(p, "cancelled")
        elif action == "expire":
            self.settle(p, "expired")
        elif action != "callback":
            return 404, {"error": f"unknown action {action}"}
        if action == "callback" or _truthy(body.get("callback", True)):
            copies = int(body.get("copies", 1))
            forged = _truthy(body.get("forged", False))
            codes = [self.callback(p, forged) for _ in range(copies)]
        return 200, {"payment": asdict(p), "callbacks": codes}

    # --- provider APIs ------------------------------------------------------------------
    def api(self, method: str, path: str, headers: Mapping[str, str], body: dict[str, Any]
            ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        if path.startswith("/api/"):
            return self._paygate(path, body)
        if headers.get("authorization") != f"Bearer {self.config.fedapay_secret_key}":
            return 401, {"message": "Unauthenticated."}
        return self._fedapay(method, path.rstrip("/"), body)

    def _paygate(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("auth_token") != self.config.paygate_token:
            return 200, {"status": 2} if path == "/api/v1/pay" else {"error_code": 2}
        ref = str(body.get("identifier") or "")
        if path == "/api/v1/pay":
            try:
                amount = int(body["amount"])
                network = {"FLOOZ": "flooz", "TMONEY": "tmoney"}[body["network"]]
                phone = str(body["phone_number"])
            except (KeyError, ValueError, TypeError):
                return 200, {"status": 4}
            with self.lock:
                if not ref or amount <= 0:
                    return 200, {"status": 4}
                if ref in self.payments:
                    return 200, {"tx_reference": self.payments[ref].tx_reference, "status": 6}
                p = SimPayment("paygate", ref, amount, phone, network,
                               str(body.get("description", "")),
                               tx_reference=secrets.token_hex(8), pushed=1)  # fmt: skip
                self.payments[ref] = p
            return 200, {"tx_reference": p.tx_reference, "status": 0}
        if path == "/api/v2/status":
            with self.lock:
                found = self.payments.get(ref)
                if found is None or found.provider != "paygate":
                    return 200, {"error_code": 404, "error_message": "transaction not found"}
                return 200, {
                    "tx_reference": found.tx_reference, "identifier": found.ref,
                    "payment_reference": found.payment_reference,
                    "status": _PAYGATE_CODE[found.status], "datetime": _now_text(),
                    "payment_method": "FLOOZ" if found.network == "flooz" else "T-Money",
                    "amount": found.paid_amount if found.paid_amount is not None else found.amount,
                }  # fmt: skip
        return 404, {"error": "not found"}

    def _fedapay(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/transactions":
            customer = body.get("customer") or {}
            phone = str((customer.get("phone_number") or {}).get("number", ""))
            ref = str(body.get("merchant_reference") or "")
            if not ref or int(body.get("amount") or 0) <= 0:
                return 400, {"message": "Paramètre manquant ou la valeur est vide"}
            if (body.get("currency") or {}).get("iso") != "XOF":
                return 400, {"message": "currency: XOF only here"}
            with self.lock:
                if ref in self.payments:  # FedaPay itself would create a second one
                    return 400, {"message": "merchant_reference has already been taken"}
                new = SimPayment("fedapay", ref, int(body["amount"]), phone, "",
                                 str(body.get("description", "")),
                                 fedapay_id=next(self._ids))  # fmt: skip
                self.payments[ref] = new
            return 200, {"v1/transaction": self.fedapay_entity(new)}
        p = self._by_feda_id(parts[2]) if len(parts) >= 3 and parts[2].isdigit() else None
        if method == "GET" and len(parts) == 3 and p is not None:
            return 200, {"v1/transaction": self.fedapay_entity(p)}
        if method == "POST" and len(parts) == 4 and parts[3] == "token" and p is not None:
            with self.lock:
                p.token = p.token or secrets.token_urlsafe(16)
            return 200, {"token": p.token, "url": f"https://sim.invalid/pay/{p.token}"}
        mode = parts[-1]
        if method == "POST" and mode in MODES.values() and len(parts) in (2, 3):
            with self.lock:
                target = next((x for x in self.payments.values()
                               if x.token and x.token == body.get("token")), None)  # fmt: skip
                if target is None or target.status != "pending":
                    return 400, {"message": "token invalide ou transaction déjà traitée"}
                target.network = next(n for n, m in MODES.items() if m == mode)
                target.pushed += 1
            return 200, {"message": "success"}
        return 404, {"message": "not found"}

    def _by_feda_id(self, text: str) -> SimPayment | None:
        with self.lock:
            return next((p for p in self.payments.values() if p.fedapay_id == int(text)), None)

    # --- serving ----------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        server = Server((host, port), _handler(self))
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, args=(0.1,), name="paysim", daemon=True
        ).start()
        self.server = server
        return server

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _truthy(v: Any) -> bool:
    return v is True or str(v).lower() in ("1", "true", "yes", "on")


def _now_text(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts if ts is not None else time.time()))


def _handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "relais-paysim"
        # Keep-alive: the callers' one HTTP client reuses the connection (no new connection
        # and server thread per status check or callback); idle ones close after 30 s.
        protocol_version = "HTTP/1.1"
        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, code: int, data: Any, ctype: str = "application/json") -> None:
            raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> dict[str, Any]:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if "json" in (self.headers.get("Content-Type") or "") or raw.startswith(b"{"):
                try:
                    data = json.loads(raw or b"{}")
                except ValueError:
                    return {}
                return data if isinstance(data, dict) else {}
            return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}

        def _provider(self, method: str) -> None:
            path = urlsplit(self.path).path
            body = self._body() if method == "POST" else {}
            if path.startswith("/_sim/"):
                code, data = sim.control(path[len("/_sim/") :], body)
                if "html" in (self.headers.get("Accept") or ""):  # the form: back to the page
                    self.send_response(303)
                    self.send_header("Location", "/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._answer(code, data)
                return
            with sim.lock:
                delay, fail = sim.delay_s, sim.fail_next > 0
                sim.fail_next -= 1 if fail else 0
            time.sleep(delay)  # "answer slowly": a deliberate fault, not a wait in a test
            if fail:
                self._answer(503, {"message": "Service Unavailable"})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._answer(*sim.api(method, path, headers, body))

        def do_POST(self) -> None:
            self._provider("POST")

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/_sim/payments":
                with sim.lock:
                    self._answer(200, [asdict(p) for p in sim.payments.values()])
            elif path == "/":
                self._answer(200, _page(sim), "text/html; charset=utf-8")
            else:
                self._provider("GET")

    return Handler


def _page(sim: Simulator) -> str:
    rows = []
    with sim.lock:
        items = sorted(sim.payments.values(), key=lambda p: -p.created_at)[:50]
    for p in items:
        forms = "".join(
            f'<form method="post" action="/_sim/{a}" style="display:inline">'
            f'<input type="hidden" name="ref" value="{html.escape(p.ref)}">'
            f"<button>{label}</button></form>"
            for a, label in (("confirm", "Confirmer (PIN)"), ("refuse", "Refuser"),
                             ("expire", "Laisser expirer"), ("callback", "Rappel en double"))
        )  # fmt: skip
        rows.append(
            f"<tr><td>{html.escape(p.ref)}</td><td>{p.provider}</td><td>{p.network}</td>"
            f"<td>{html.escape(p.phone)}</td><td>{p.amount}</td><td>{p.status}</td>"
            f"<td>{html.escape(p.description)}</td><td>{forms if p.status == 'pending' else ''}"
            "</td></tr>"
        )
    return (
        "<!doctype html><meta charset=utf-8><title>Simulateur mobile money</title>"
        "<h1>Simulateur mobile money (PayGate, FedaPay)</h1>"
        "<p>Chaque ligne est une demande envoyée à un téléphone : confirmez-la comme si "
        "vous tapiez le code PIN, ou refusez-la.</p><table border=1 cellpadding=4>"
        "<tr><th>réf.</th><th>fournisseur</th><th>réseau</th><th>téléphone</th>"
        "<th>montant</th><th>état</th><th>description</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )


def run(config: SimConfig, host: str, port: int) -> int:
    """``hubctl payments simulator``: serve until interrupted."""
    sim = Simulator(config)
    sim.serve(host, port)
    print(f"mobile-money simulator on {sim.url} (PayGate /api/..., FedaPay /v1/...)", flush=True)
    print(f"play the phone at {sim.url}/ or POST {sim.url}/_sim/confirm", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    return 0
