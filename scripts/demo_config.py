"""The demo's settings and the documents it seeds (pure): where its state lives, the demo
hub's identity, addresses and ports, the library items, the layer it writes on the enrolled
hub config, the broker's config and the payments settings the centre uses."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.broker import mosquitto_conf

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("RELAIS_DEMO_STATE") or ROOT / "demo-state").resolve()
INFO = STATE / "demo.json"
PIDFILE = STATE / "demo.pid"
PROCS = STATE / "procs.json"
BIN = Path(sys.executable).parent

HUB_ID = "tg-demo-mairie-01"
HUB_NAME = "Mairie de Démo"
CARETAKER_PASSWORD = "gardien-demo"  # demo only: printed for the person trying the demo
PORTAL = "http://10.42.0.1:8080"
CONTENT_PORT = 8081  # content.serve_port: the hub's nginx for the library's files
FLEET_PORT = int(os.environ.get("RELAIS_DEMO_FLEET_PORT") or 8090)
MQTT_PORT = 1883
# The controller's link between this machine and the upstream namespace: link-local, so
# it never clashes with a routed network of the host (TEST-NET-1 is some hosts' LAN).
CTL_LINK = "rlxdemo0"
UPSTREAM_URL = "http://198.51.100.1"
CTL_HOST_IP = "169.254.42.1"
CTL_UP_IP = "169.254.42.2"
VOUCHERS = (("heure", 3), ("jour", 2))
# Mobile money: the centre's callback endpoint and the provider simulator, beside the fleet.
PAY_PORT = FLEET_PORT + 1
SIM_PORT = FLEET_PORT + 2
SIM_URL = f"http://127.0.0.1:{SIM_PORT}"
DEMO_PHONE = "90123456"  # T-Money (PayGate); 96… numbers are Flooz (FedaPay)

START_TIMEOUT_S = 120.0


# --- pure: what the demo seeds -----------------------------------------------------------
def tiny_pdf(lines: Sequence[str]) -> bytes:
    """A valid one-page PDF showing ``lines`` (Latin-1 text), with a correct xref."""
    text = "".join(
        f"BT /F1 14 Tf 60 {760 - 24 * i} Td ({s.replace('(', '[').replace(')', ']')}) Tj ET\n"
        for i, s in enumerate(lines)
    ).encode("latin-1")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def demo_files() -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Upstream file name -> (bytes, manifest fields other than url/size/sha256)."""
    pdf = tiny_pdf(
        [
            "Guide paludisme (demo Relais)",
            "Dormez sous une moustiquaire impregnee.",
            "Fievre chez un enfant : allez au centre de sante le jour meme.",
        ]
    )
    html = (
        "<!doctype html><html lang=fr><meta charset=utf-8><title>Hygiène des mains</title>"
        "<h1>Hygiène des mains</h1><p>Lavez-vous les mains à l'eau et au savon pendant "
        "20 secondes, avant de manger et après les toilettes.</p></html>\n"
    ).encode()
    return {
        "guide-paludisme.pdf": (
            pdf,
            {
                "id": "guide-paludisme",
                "title": {"fr": "Guide paludisme", "en": "Malaria guide"},
                "kind": "pdf",
                "priority": "pinned",
                "language": "fr",
            },
        ),
        "hygiene-des-mains.html": (
            html,
            {
                "id": "hygiene-des-mains",
                "title": {"fr": "Hygiène des mains", "en": "Hand hygiene"},
                "kind": "html",
                "language": "fr",
            },
        ),
    }


def content_items(base_url: str) -> list[dict[str, Any]]:
    return [
        {
            **meta,
            "url": f"{base_url}/{name}",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        for name, (data, meta) in demo_files().items()
    ]


def demo_layer(hub_dir: Path, admin_hash: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """What the demo changes in the enrolled config: paths under ``hub_dir``, the demo
    caretaker password, the demo library (synced at any hour) and a quick telemetry beat.
    The hub starts from it on disk, and the demo pushes it centrally as well, so the
    registry's desired config is the one running and a person's own push layers on it."""
    return {
        "data_dir": str(hub_dir / "data"),
        "portal": {
            "agent_socket": str(hub_dir / "run" / "agent.sock"),
            "admin_password_hash": admin_hash,
        },
        "content": {"sync_window": "00:00-00:00", "items": items},
        "mqtt": {"telemetry_interval_s": 10},
        # the hub resolves through the lab's upstream resolver: names work for the phone
        "network": {"wan": {"dns_servers": [UPSTREAM_URL.removeprefix("http://")]}},
    }


def broker_conf(broker_dir: Path) -> str:
    # One listener on every address of the upstream namespace: hubs come in over their
    # uplink (198.51.100.1), the controller over the veth from this machine.
    return mosquitto_conf(
        broker_dir, listener=str(MQTT_PORT), anonymous=False, passwords=True, acl=True
    )


def shown(path: Path) -> str:
    """A path as a person in the repo types it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def payments_settings() -> dict[str, Any]:
    """``secrets/payments.json`` for the demo: both providers are the simulator, with its
    default credentials (``hubctl payments simulator``)."""
    return {
        "networks": {"tmoney": "paygate", "flooz": "fedapay"},
        "paygate": {"auth_token": "sim-paygate-token", "base_url": SIM_URL},
        "fedapay": {"secret_key": "sk_sandbox_sim", "webhook_secret": "wh_sandbox_sim",
                    "base_url": SIM_URL},
    }  # fmt: skip


def catalogue_args(item: dict[str, Any]) -> list[str]:
    """``hubctl content add`` arguments for one demo manifest entry."""
    args = ["content", "add", item["id"], "--kind", item["kind"], "--url", item["url"]]
    args += ["--title-fr", item["title"]["fr"], "--title-en", item["title"]["en"]]
    args += ["--language", item["language"], "--size", str(item["size"])]
    args += ["--sha256", item["sha256"]]
    return args + (["--pinned"] if item.get("priority") == "pinned" else [])
