"""Wiring of the payment service: provider settings, prices, MQTT and the callback server.

Provider secrets live in the controller's state folder, ``secrets/payments.json`` (0600;
never in a hub config)::

    {"networks": {"tmoney": "paygate", "flooz": "fedapay"},
     "paygate": {"auth_token": "...", "base_url": "https://paygateglobal.com"},
     "fedapay": {"secret_key": "sk_live_...", "webhook_secret": "wh_live_...",
                 "base_url": "https://api.fedapay.com"},
     "expire_after_s": 900}

A provider section may be left out; a network routed to a missing provider is not offered.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Mapping
from typing import Any

from hub_agent.config import Plan
from provisioning import registry, topics
from provisioning.payments.base import Provider
from provisioning.payments.fedapay import SANDBOX_URL, FedaPay
from provisioning.payments.paygate import DEFAULT_BASE_URL, PayGate
from provisioning.payments.service import PaymentService, Publish, RequestRefused, Settings
from provisioning.statedir import StateDir
from provisioning.storage import Database

log = logging.getLogger("relais.payments")
SECRET_NAME = "payments"
REQUEST_FILTERS = [f"{topics.ROOT}/+/payments/request", f"{topics.ROOT}/+/payments/ack"]


class PaymentsConfigError(ValueError):
    pass


def providers_from(cfg: Mapping[str, Any]) -> tuple[dict[str, Provider], dict[str, str]]:
    providers: dict[str, Provider] = {}
    pg = cfg.get("paygate")
    if isinstance(pg, dict):
        if not pg.get("auth_token"):
            raise PaymentsConfigError("paygate.auth_token is required")
        providers["paygate"] = PayGate(
            str(pg["auth_token"]), str(pg.get("base_url") or DEFAULT_BASE_URL)
        )
    fp = cfg.get("fedapay")
    if isinstance(fp, dict):
        if not fp.get("secret_key") or not fp.get("webhook_secret"):
            raise PaymentsConfigError("fedapay.secret_key and fedapay.webhook_secret are required")
        providers["fedapay"] = FedaPay(
            str(fp["secret_key"]),
            str(fp["webhook_secret"]),
            str(fp.get("base_url") or SANDBOX_URL),
            str(fp.get("callback_url") or ""),
        )
    routes = {str(k): str(v) for k, v in dict(cfg.get("networks") or {}).items()}
    if not routes and providers:
        only = next(iter(providers))
        routes = {"tmoney": only, "flooz": only}
    return providers, routes


def load_config(state: StateDir) -> dict[str, Any]:
    cfg = state.read_secret(SECRET_NAME)
    if cfg is None:
        raise PaymentsConfigError(
            f"{state.secret_path(SECRET_NAME)} is missing (see docs/operations.md, payments)"
        )
    return cfg


def plan_price(plan: Mapping[str, Any]) -> int | None:
    """A plan's price in whole XOF: ``price_xof`` when the config has it, else the number
    in ``price_label`` ("100 FCFA")."""
    value = plan.get("price_xof")
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    digits = re.sub(r"[\s\u202f.]", "", str(plan.get("price_label") or ""))
    m = re.match(r"^(\d+)(FCFA|XOF|F)?$", digits, re.IGNORECASE)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


def price_from_registry(db: Database, lock: threading.RLock) -> Any:
    """``price_of(hub_id, plan_id)``: from the hub's latest desired config (the centre's
    copy, so a hub cannot lower its own prices), else the base config."""
    from provisioning.hubdoc import base_document

    def price_of(hub_id: str, plan_id: str) -> tuple[int, Plan] | None:
        with lock:
            cfg = registry.latest_config(db, hub_id)
        plans = (cfg or base_document()).get("plans") or []
        for p in plans:
            if isinstance(p, dict) and p.get("id") == plan_id:
                amount = plan_price(p)
                if amount is None:
                    return None
                fields = {k: v for k, v in p.items() if k in Plan.model_fields}
                return amount, Plan.model_validate(fields)
        return None

    return price_of


def build_service(
    state: StateDir, db: Database, publish: Publish, cfg: Mapping[str, Any] | None = None
) -> PaymentService:
    from provisioning.vouchers import voucher_secret

    cfg = load_config(state) if cfg is None else cfg
    providers, routes = providers_from(cfg)
    settings = Settings(expire_after_s=float(cfg.get("expire_after_s") or Settings.expire_after_s))
    lock = threading.RLock()
    svc = PaymentService(
        db, state.signing_key(), voucher_secret(state), providers, routes, publish,
        price_from_registry(db, lock), settings, lock=lock,
    )  # fmt: skip
    return svc


def dispatch(svc: PaymentService, topic: str, payload: bytes) -> None:
    """One hub message: ``relais/hubs/<id>/payments/{request,ack}``."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[:2] != ["relais", "hubs"] or parts[3] != "payments":
        return
    try:
        msg = json.loads(payload)
    except ValueError:
        log.warning("payments: %s is not JSON", topic)
        return
    if not isinstance(msg, dict):
        return
    hub_id, leaf = parts[2], parts[4]
    try:
        if leaf == "request":
            svc.handle_request(hub_id, msg)
        elif leaf == "ack":
            svc.handle_ack(hub_id, msg)
    except RequestRefused as e:
        log.info("payments: request from %s refused: %s", hub_id, e)


def run_service(
    state: StateDir,
    db: Database,
    broker_url: Any,
    http: tuple[str, int] | None,
    client_id: str = "relais-payments",
    stop: threading.Event | None = None,
) -> int:
    """``hubctl payments run``: hub requests over MQTT, provider callbacks over HTTP,
    the poller; until ``stop`` (or Ctrl-C)."""
    from hub_agent.mqtt.client import Client
    from provisioning.payments import web

    stop = stop or threading.Event()
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    # A persistent session: requests published while we are down wait at the broker.
    client = Client(
        broker_url,
        client_id=client_id,
        on_message=lambda t, p, _r: inbox.put((t, p)),
        clean_start=False,
        session_expiry_s=7 * 86400,
    )
    client.connect()
    svc = build_service(state, db, lambda t, p: client.publish(t, p))
    client.subscribe(REQUEST_FILTERS)
    server = web.serve(svc, *http) if http else None
    worker = threading.Thread(target=svc.run, args=(stop,), name="payments-poll", daemon=True)
    worker.start()
    if server is not None:
        host, port = server.server_address[:2]
        print(f"payments: callbacks at http://{host!s}:{port}/payments/callback/<provider>")
    try:
        while not stop.is_set():
            try:
                topic, payload = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            dispatch(svc, topic, payload)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        worker.join(5)
        if server is not None:
            server.shutdown()
        svc.close()
        client.close()
    return 0
