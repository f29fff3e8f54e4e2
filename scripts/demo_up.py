"""Bringing the demo up: the lab, the enrolled hub, the broker, the catalogue, the hub's
config and vouchers, the controller, mobile money, the agent and the portal, then the
central push of the demo's layer (the steps of scripts/demo.py's docstring)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml

from captive_portal.security import hash_password
from hub_agent.config import validate_config
from lab.broker import mosquitto_path
from lab.netns import Lab
from lab.users import portal_gid, portal_setpriv
from provisioning.pushplan import deep_merge
from provisioning.statedir import StateDir
from scripts.demo_config import (
    BIN,
    CARETAKER_PASSWORD,
    CONTENT_PORT,
    CTL_HOST_IP,
    CTL_LINK,
    CTL_UP_IP,
    FLEET_PORT,
    HUB_ID,
    HUB_NAME,
    MQTT_PORT,
    PAY_PORT,
    PORTAL,
    SIM_PORT,
    STATE,
    UPSTREAM_URL,
    VOUCHERS,
    broker_conf,
    catalogue_args,
    content_items,
    demo_files,
    demo_layer,
    payments_settings,
)
from scripts.demo_procs import (
    DemoError,
    Supervisor,
    clean_env,
    http_ok,
    listening,
    run,
    wait_until,
)


def fresh_state() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE, 0o755)  # the portal (nobody) walks through it to its config
    for sub in ("central", "hub", "broker", "upstream-www"):
        shutil.rmtree(STATE / sub, ignore_errors=True)
    (STATE / "demo-push.yaml").unlink(missing_ok=True)
    for log in STATE.glob("*.log"):
        if log.name != "demo.log":
            log.unlink()


def link_controller(lab_up_ns: str) -> None:
    """veth: this machine (169.254.42.1) <-> upstream namespace (169.254.42.2), for the
    controller's MQTT connection. Deleting the upstream namespace deletes both ends."""
    subprocess.run(["ip", "link", "del", CTL_LINK], capture_output=True)
    taken = [a for a in (CTL_HOST_IP, CTL_UP_IP) if f"inet {a}/" in run(["ip", "-4", "addr"])]
    if taken:
        raise DemoError(f"this machine already uses {taken}: the demo's controller link needs it")
    run(["ip", "link", "add", CTL_LINK, "type", "veth", "peer", "name", "ctl0", "netns", lab_up_ns])
    run(["ip", "addr", "add", f"{CTL_HOST_IP}/30", "dev", CTL_LINK])
    run(["ip", "link", "set", CTL_LINK, "up"])
    run(["ip", "-n", lab_up_ns, "addr", "add", f"{CTL_UP_IP}/30", "dev", "ctl0"])
    run(["ip", "-n", lab_up_ns, "link", "set", "ctl0", "up"])


def enroll(central: Path) -> dict[str, Any]:
    central.mkdir(parents=True, exist_ok=True, mode=0o700)
    (central / "central.yaml").write_text(
        yaml.safe_dump(
            {
                "hub_mqtt_url": f"mqtt://198.51.100.1:{MQTT_PORT}",
                "controller_mqtt_url": f"mqtt://{CTL_UP_IP}:{MQTT_PORT}",
            }
        )
    )
    out = run(
        [
            str(BIN / "hubctl"),
            "--state",
            str(central),
            "enroll",
            HUB_ID,
            "--kind",
            "mairie",
            "--name",
            HUB_NAME,
            "--region",
            "Maritime",
            "--prefecture",
            "Golfe",
        ]
    )
    (STATE / "enroll.log").write_text(
        "\n".join(line for line in out.splitlines() if "password" not in line.lower()) + "\n"
    )
    hv = yaml.safe_load((central / "ansible" / "host_vars" / f"{HUB_ID}.yml").read_text())
    config = hv["relais_hub_config"]
    assert isinstance(config, dict)
    return config


def start_broker(sup: Supervisor, central: Path, up_ns: str) -> None:
    exe = mosquitto_path()
    if exe is None:
        raise DemoError("mosquitto is not installed (make demo installs it)")
    bdir = STATE / "broker"
    (bdir / "data").mkdir(parents=True)
    shutil.copy(central / "mosquitto" / "passwd", bdir / "passwd")
    shutil.copy(central / "mosquitto" / "acl", bdir / "acl")
    (bdir / "mosquitto.conf").write_text(broker_conf(bdir))
    with contextlib.suppress(KeyError):  # mosquitto drops to its own user when started as root
        ent = pwd.getpwnam("mosquitto")
        for p in [bdir, *bdir.rglob("*")]:
            os.chown(p, ent.pw_uid, ent.pw_gid)
    sup.spawn("broker", [exe, "-c", str(bdir / "mosquitto.conf")], ns=up_ns)
    wait_until("broker", lambda: sup.check("broker") or listening(up_ns, MQTT_PORT), 10)


def seed_catalogue(central: Path, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the demo items to the central catalogue, assign them to the demo hub, and
    return the hub's manifest as the catalogue renders it (what goes into its config)."""
    hubctl = [str(BIN / "hubctl"), "--state", str(central)]
    for item in items:
        run([*hubctl, *catalogue_args(item)])
        run([*hubctl, "content", "assign", item["id"], "--hub", HUB_ID])
    rows = json.loads(run([*hubctl, "content", "list", "--hub", HUB_ID, "--json"]))
    return [{k: v for k, v in row.items() if k != "targets"} for row in rows]


def write_hub_config(enrolled: dict[str, Any], hub_dir: Path, layer: dict[str, Any]) -> Path:
    doc = deep_merge(enrolled, layer)
    validate_config(doc, source="demo hub config")
    (hub_dir / "run").mkdir(parents=True)
    os.chmod(hub_dir, 0o755)
    os.chmod(hub_dir / "run", 0o755)
    path = hub_dir / "hub.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    # It holds the hub's broker password: root and the portal's group only.
    os.chown(path, 0, portal_gid())
    os.chmod(path, 0o640)
    return path


def push_layer(central: Path, layer: dict[str, Any]) -> str:
    """``hubctl push`` the demo layer (signed, over MQTT); the hub's answer ("applied")."""
    path = STATE / "demo-push.yaml"
    path.write_text(yaml.safe_dump(layer, sort_keys=False, allow_unicode=True), encoding="utf-8")
    hubctl = [str(BIN / "hubctl"), "--state", str(central)]
    out = run([*hubctl, "push", HUB_ID, str(path), "--timeout", "30"])
    (STATE / "push.log").write_text(out)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return last.removeprefix("summary: ").strip()


def start_payments(sup: Supervisor, central: Path, ctl_mqtt: str) -> None:
    """The provider simulator and ``hubctl payments run`` on this machine, out of the box."""
    hubctl = [str(BIN / "hubctl"), "--state", str(central)]
    callback = f"http://127.0.0.1:{PAY_PORT}/payments/callback"
    sup.spawn("paysim", [*hubctl, "payments", "simulator", "--host", "127.0.0.1", "--port",
                         str(SIM_PORT), "--paygate-callback", f"{callback}/paygate",
                         "--fedapay-webhook", f"{callback}/fedapay"])  # fmt: skip
    StateDir(central).write_secret("payments", payments_settings())  # 0600, never on a hub
    sup.spawn("payments", [*hubctl, "--mqtt", ctl_mqtt, "payments", "run", "--http-host",
                           "127.0.0.1", "--http-port", str(PAY_PORT)])  # fmt: skip
    wait_until("payment simulator", lambda: sup.check("paysim") or listening(None, SIM_PORT), 20)
    wait_until("payments service", lambda: sup.check("payments") or listening(None, PAY_PORT), 20)


def issue_vouchers(config: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for plan, count in VOUCHERS:
        text = run(
            [
                str(BIN / "hub-agent"),
                "vouchers",
                "issue",
                "--config",
                str(config),
                "--plan",
                plan,
                "--count",
                str(count),
                "--json",
            ]
        )
        out[plan] = list(json.loads(text)["codes"])
    return out


def fleet_row(central: Path) -> dict[str, Any]:
    """The demo hub's row of ``hubctl fleet --json`` ({} when it cannot be read)."""
    p = subprocess.run(
        [str(BIN / "hubctl"), "--state", str(central), "fleet", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    if p.returncode != 0:
        return {}
    rows = [r for r in json.loads(p.stdout) if r["id"] == HUB_ID]
    return dict(rows[0]) if rows else {}


def fleet_status(central: Path) -> str:
    return str(fleet_row(central).get("status", "unknown"))


def content_ready(data_dir: Path) -> int:
    try:
        index = json.loads((data_dir / "content" / "library.json").read_text())
    except (OSError, ValueError):
        return 0
    items = index.get("items", index) if isinstance(index, dict) else index
    return len(items) if isinstance(items, list) else 0


def bring_up(sup: Supervisor) -> tuple[Lab, dict[str, Any]]:
    """Start everything (see the module's docstring); on any failure, stop what started."""

    fresh_state()
    for port in (FLEET_PORT, PAY_PORT, SIM_PORT):  # say it plainly now, not as a crash later
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise DemoError(
                    f"127.0.0.1:{port} is in use: free it or set RELAIS_DEMO_FLEET_PORT"
                    f" (the demo uses it, {PAY_PORT} and {SIM_PORT})"
                ) from None
    www = STATE / "upstream-www"
    (www / "library").mkdir(parents=True)
    (www / "index.html").write_text("<h1>upstream internet</h1>\n")
    for name, (data, _) in demo_files().items():
        (www / "library" / name).write_bytes(data)

    lab = Lab.create(clients=1, nat=False, www_root=www)
    lab.resolve_via_hub(lab.clients[0])  # the phone asks the hub's DNS, as DHCP says
    sup.namespaces = [lab.hub_ns, lab.upstream_ns, *(c.ns for c in lab.clients)]
    sup.record()
    try:
        link_controller(lab.upstream_ns)
        central = STATE / "central"
        enrolled = enroll(central)
        start_broker(sup, central, lab.upstream_ns)

        hub_dir = STATE / "hub"
        items = seed_catalogue(central, content_items(f"{UPSTREAM_URL}/library"))
        layer = demo_layer(hub_dir, hash_password(CARETAKER_PASSWORD), items)
        config = write_hub_config(enrolled, hub_dir, layer)
        vouchers = issue_vouchers(config)

        ctl_mqtt = f"mqtt://{CTL_UP_IP}:{MQTT_PORT}"
        sup.spawn(
            "controller",
            [
                str(BIN / "hubctl"),
                "--state",
                str(central),
                "--mqtt",
                ctl_mqtt,
                "controller",
                "run",
                "--http-host",
                "127.0.0.1",
                "--http-port",
                str(FLEET_PORT),
            ],
        )
        fleet_url = f"http://127.0.0.1:{FLEET_PORT}/"
        start_payments(sup, central, ctl_mqtt)

        sup.spawn("agent", [str(BIN / "hub-agent"), "run", "--config", str(config)], ns=lab.hub_ns)
        sock = hub_dir / "run" / "agent.sock"
        # The agent gives its socket to group relais-portal itself, as on a real hub, so
        # the portal keeps access across agent restarts.
        wait_until("agent socket", lambda: sup.check("agent") or sock.exists(), 30)

        sup.spawn(
            "portal",
            [
                *portal_setpriv(),
                str(BIN / "captive-portal"),
                "--config",
                str(config),
            ],
            ns=lab.hub_ns,
        )

        wait_until("portal", lambda: sup.check("portal") or listening(lab.hub_ns, 8080), 30)
        wait_until("fleet page", lambda: sup.check("controller") or http_ok(fleet_url), 30)
        data_dir = hub_dir / "data"
        wait_until(
            "content library",
            lambda: sup.check("agent") or content_ready(data_dir) == len(demo_files()),
            60,
        )
        wait_until("library server", lambda: listening(lab.hub_ns, CONTENT_PORT), 30)
        wait_until(
            "hub online in the fleet",
            lambda: sup.check("agent") or fleet_status(central) == "online",
            60,
            every=1.0,
        )
        pushed = push_layer(central, layer)
    except BaseException:
        sup.stop_all()
        lab.close()
        raise
    return lab, {
        "hub_id": HUB_ID,
        "client_ns": lab.clients[0].ns,
        "hub_ns": lab.hub_ns,
        "upstream_ns": lab.upstream_ns,
        "portal_url": f"{PORTAL}/",
        "caretaker_url": f"{PORTAL}/admin",
        "caretaker_password": CARETAKER_PASSWORD,
        "library_url": f"{PORTAL}/content/",
        "fleet_url": fleet_url,
        "central_state": str(central),
        "hub_config": str(config),
        "controller_mqtt": ctl_mqtt + " (controller)",
        "vouchers": vouchers,
        "content_ready": content_ready(data_dir),
        "hub_status": fleet_status(central),
        "push": pushed,
        "push_file": str(STATE / "demo-push.yaml"),
    }
