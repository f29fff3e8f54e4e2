"""`make demo` / `make demo-stop`: the whole product on one machine, in lab namespaces.

``start`` launches a detached supervisor (``serve``) and prints what it started; running
``start`` again while a demo is up prints the same text again. ``serve``:

1. builds the lab (hub, one phone, upstream "internet" with HTTP and DNS; no lab NAT: the
   agent's own nftables table does it) and a veth from this machine to the upstream
   namespace, so the controller here reaches the broker there;
2. enrolls the demo hub with the real ``hubctl enroll`` (broker password file + ACL,
   central signing key, first config, host_vars) under ``<state>/central``;
3. runs mosquitto in the upstream namespace with that password file and ACL;
4. adds two demo items to the central content catalogue (``hubctl content add|assign``)
   and writes the hub's config from the enrolled one (demo caretaker password, the hub's
   manifest from the catalogue, paths under ``<state>/hub``), issues demo vouchers with
   ``hub-agent vouchers issue``, then runs ``hub-agent run`` (root: enforcement,
   accounting, telemetry, config sync and the content cache, which syncs the items from
   upstream and serves them with nginx on :8081) and ``captive-portal`` (nobody) in the
   hub namespace;
5. runs ``hubctl controller run`` on this machine (fleet page on 127.0.0.1:8090), and
   mobile money against the provider simulator: ``hubctl payments simulator`` (the phone's
   confirmation page on 127.0.0.1:8092) and ``hubctl payments run`` (callbacks on :8091)
   with ``secrets/payments.json`` pointing both providers at the simulator;
6. waits until the phone sees the portal, the library is synced and the fleet shows the
   hub online; pushes the demo's layer with ``hubctl push`` (signed, over MQTT: the
   registry's desired config is then the one running, v2 applied), writes
   ``<state>/demo.json`` and waits for ``stop``.

Every process logs to ``<state>/<name>.log``. ``stop`` ends the supervisor, which stops
its processes and deletes the namespaces; it then removes anything a killed supervisor
left behind (the pids and namespaces it recorded in ``<state>/procs.json``).
``RELAIS_DEMO_STATE`` moves the state folder (default ``demo-state/``) and
``RELAIS_DEMO_FLEET_PORT`` the fleet page (default 8090); the tests use both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from captive_portal.security import hash_password
from hub_agent.config import validate_config
from lab.broker import mosquitto_conf, mosquitto_path
from lab.netns import Lab, LabError, delete_netns, list_netns
from lab.users import portal_gid, portal_setpriv
from provisioning.pushplan import deep_merge
from provisioning.statedir import StateDir

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


class DemoError(RuntimeError):
    pass


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


def login_script(code: str) -> str:
    """A shell line that logs the phone in as its browser would: splash form, then POST."""
    token = rf'curl -s {PORTAL}/ | grep -o "name=.csrf. value=.[^\"]*" | head -1 | cut -d\" -f4'
    post = f"curl -s -d method=voucher -d code={code} --data-urlencode csrf=$t {PORTAL}/login"
    return f"""sh -c 't=$({token}); {post} | grep -o "<h1>[^<]*"'"""


def payments_settings() -> dict[str, Any]:
    """``secrets/payments.json`` for the demo: both providers are the simulator, with its
    default credentials (``hubctl payments simulator``)."""
    return {
        "networks": {"tmoney": "paygate", "flooz": "fedapay"},
        "paygate": {"auth_token": "sim-paygate-token", "base_url": SIM_URL},
        "fedapay": {"secret_key": "sk_sandbox_sim", "webhook_secret": "wh_sandbox_sim",
                    "base_url": SIM_URL},
    }  # fmt: skip


def pay_script(phone: str, plan: str = "heure") -> str:
    """A shell line that buys ``plan`` from the phone as its browser would (the splash's
    mobile-money form and its CSRF token); prints the purchase's page path."""
    box = r'sed -n "/action=.\/pay./,\$p"'
    token = (
        rf'curl -s {PORTAL}/ | {box} | grep -o "name=.csrf. value=.[^\"]*" | head -1 | cut -d\" -f4'
    )
    post = (f"curl -s -d plan={plan} -d phone={phone} --data-urlencode csrf=$t {PORTAL}/pay"
            ' | grep -o "/pay/[A-Za-z0-9_-]*" | head -1')  # fmt: skip
    return f"""bash -c 't=$({token}); {post}'"""


def confirm_script(phone: str) -> str:
    """The phone types its PIN: the simulator's JSON API (its page does the same)."""
    return (f"curl -sf -H 'Content-Type: application/json' -d '{{\"phone\": \"{phone}\"}}'"
            f" {SIM_URL}/_sim/confirm >/dev/null && echo confirmed")  # fmt: skip


def render_text(info: dict[str, Any]) -> str:
    ns = info["client_ns"]
    v = info["vouchers"]
    hubctl = f"{shown(BIN / 'hubctl')} --state {shown(Path(info['central_state']))}"
    rows = [
        ("Portal (phone)", f"{PORTAL}/"),
        ("Caretaker (phone)", f"{PORTAL}/admin   password: {info['caretaker_password']}"),
        ("Library (phone)", f"{PORTAL}/content/   ({info['content_ready']} items synced)"),
        ("Fleet page", f"{info['fleet_url']}   (this machine; hub {info['hub_status']})"),
        ("Fleet in a terminal", f"{hubctl} fleet"),
        ("Library catalogue", f"{hubctl} content list --hub {HUB_ID}"),
        ("Push a config", f"{hubctl} push {HUB_ID} {shown(Path(info['push_file']))}"),
        ("Demo config pushed", f"{info['push']} (signed, over MQTT)"),
        ("Vouchers, 1-hour", "  ".join(v.get("heure", []))),
        ("Vouchers, day pass", "  ".join(v.get("jour", []))),
        ("Mobile money", f"{SIM_URL}/   (simulator: confirm or refuse as the phone)"),
        ("Payments", f"{hubctl} payments list"),
        ("MQTT broker", f"mqtt://198.51.100.1:{MQTT_PORT} (hubs), {info['controller_mqtt']}"),
        ("Logs", f"{shown(STATE)}/*.log"),
        ("Stop", "make demo-stop"),
    ]
    lines = [
        f"Relais demo is up: hub {HUB_ID} ({HUB_NAME}), controller and broker.",
        "",
        "Act as a phone (commands run inside the phone's network namespace):",
        f"  ip netns exec {ns} curl -i http://198.51.100.1/        # captive: 302 to the portal",
        "  # log in with a voucher (the portal's form, with its CSRF token), then browse:",
        f"  ip netns exec {ns} {login_script(v['heure'][-1])}",
        f"  ip netns exec {ns} curl http://198.51.100.1/",
        f"  ip netns exec {ns} curl -i http://service-public.gouv.tg/   # by name; open "
        "before login (walled garden)",
        f"  ip netns exec {ns} bash                                 # a shell on the phone",
        f"  ip netns exec {ns} chromium --no-sandbox --user-data-dir=/tmp/relais-phone "
        f"{PORTAL}/   # with a desktop",
        "",
        "Buy a plan by mobile money (T-Money via the PayGate simulator; 96… numbers: Flooz):",
        f"  ip netns exec {ns} {pay_script(DEMO_PHONE)}   # prints /pay/<ref>",
        f"  {confirm_script(DEMO_PHONE)}   # the phone types its PIN",
        f'  ip netns exec {ns} curl -s {PORTAL}/pay/<ref> | grep -o "<h1>[^<]*"',
        f"  # or in a browser: the splash's 'Payer par mobile money', then confirm at {SIM_URL}/",
        "",
        *(f"  {k:<22} {val}" for k, val in rows),
    ]
    return "\n".join(lines)


# --- processes -----------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed supervisor may wait a while to be reaped)."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process,
    so a pid recorded before a reboot or long ago is never mistaken for the demo's."""
    st = _stat(pid)
    return st[19] if st is not None and len(st) > 19 else None


def same_process(pid: int, start: str | None) -> bool:
    return alive(pid) and start is not None and started(pid) == start


def _running_pid() -> int | None:
    try:
        pid_text, _, start = PIDFILE.read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if same_process(pid, start.strip() or None) else None


def clean_env() -> dict[str, str]:
    # RELAIS_* overrides would silently change the demo's configs (RELAIS_MQTT_URL above all).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run(cmd: Sequence[str], ns: str | None = None, timeout: float = 60) -> str:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    p = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=ROOT
    )
    if p.returncode != 0:
        raise DemoError(f"{' '.join(cmd[:3])} ... failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def wait_until(what: str, pred: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise DemoError(f"{what}: not ready after {timeout:.0f}s (see {shown(STATE)}/*.log)")


@dataclass
class Supervisor:
    """The demo's own processes, each in its own process group, logging to ``<state>``."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    def spawn(self, name: str, cmd: Sequence[str], ns: str | None = None) -> None:
        full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
        with open(STATE / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                full,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=clean_env(),
                cwd=ROOT,
            )
        self.record()

    def check(self, name: str) -> bool:
        """False while ``name`` runs; raises with its log's tail once it has exited."""
        p = self.procs[name]
        if p.poll() is not None:
            tail = (STATE / f"{name}.log").read_text(errors="replace")[-2000:]
            raise DemoError(f"{name} exited ({p.returncode}):\n{tail}")
        return False

    def record(self) -> None:
        data = {
            "pids": {n: [p.pid, started(p.pid)] for n, p in self.procs.items()},
            "namespaces": self.namespaces,
            "link": CTL_LINK,
        }
        tmp = PROCS.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(PROCS)

    def stop_all(self) -> None:
        # Reverse start order: the portal before the agent, the broker last.
        for p in reversed(list(self.procs.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(list(self.procs.values())):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        self.procs.clear()


def listening(ns: str | None, port: int) -> bool:
    cmd = ["ss", "-Htln"]
    out = subprocess.run(
        ["ip", "netns", "exec", ns, *cmd] if ns else cmd, capture_output=True, text=True
    ).stdout
    return any(f":{port} " in line + " " for line in out.splitlines())


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


# --- the demo ------------------------------------------------------------------------------
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


def catalogue_args(item: dict[str, Any]) -> list[str]:
    """``hubctl content add`` arguments for one demo manifest entry."""
    args = ["content", "add", item["id"], "--kind", item["kind"], "--url", item["url"]]
    args += ["--title-fr", item["title"]["fr"], "--title-en", item["title"]["en"]]
    args += ["--language", item["language"], "--size", str(item["size"])]
    args += ["--sha256", item["sha256"]]
    return args + (["--pinned"] if item.get("priority") == "pinned" else [])


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


def serve() -> int:
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sup = Supervisor()
    try:
        lab, info = bring_up(sup)
    except (DemoError, LabError) as e:  # a clear reason, not a traceback
        print(f"demo failed: {e}", flush=True)
        return 1
    try:
        info["text"] = render_text(info)
        tmp = INFO.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(INFO)
        print("demo up", flush=True)
        reported: set[str] = set()
        while not stopping:
            for name, p in sup.procs.items():  # say so once if a part dies; keep the rest up
                if p.poll() is not None and name not in reported:
                    reported.add(name)
                    print(f"{name} exited ({p.returncode}); see {name}.log", flush=True)
            time.sleep(0.5)
    finally:
        sup.stop_all()
        lab.close()
        INFO.unlink(missing_ok=True)
        PROCS.unlink(missing_ok=True)
        print("demo down", flush=True)
    return 0


def leftovers() -> bool:
    """Remove what a killed supervisor left: its recorded processes, namespaces and link.
    True when there was a record to clean up."""
    try:
        data = json.loads(PROCS.read_text())
    except (OSError, ValueError):
        return False
    for pid, start in data.get("pids", {}).values():
        if same_process(int(pid), start):  # each was started as its own process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
    present = set(list_netns())
    for ns in data.get("namespaces", []):
        if ns in present:
            delete_netns(ns)
    subprocess.run(["ip", "link", "del", str(data.get("link", CTL_LINK))], capture_output=True)
    PROCS.unlink(missing_ok=True)
    return True


def start() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (it builds network namespaces).", file=sys.stderr)
        return 2
    if _running_pid() is not None and INFO.exists():
        print(json.loads(INFO.read_text())["text"])
        return 0
    if _running_pid() is not None:
        print("a demo is starting or stopping; try again, or: make demo-stop", file=sys.stderr)
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    leftovers()
    INFO.unlink(missing_ok=True)
    with open(STATE / "demo.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.demo", "serve"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PIDFILE.write_text(f"{proc.pid} {started(proc.pid)}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if INFO.exists():
            print(json.loads(INFO.read_text())["text"])
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    else:
        stop()
    print((STATE / "demo.log").read_text(errors="replace")[-3000:], file=sys.stderr)
    print(f"demo failed to start; logs in {shown(STATE)}/*.log", file=sys.stderr)
    return 1


def stop() -> int:
    pid = _running_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    cleaned = leftovers()
    # The kernel destroys a deleted namespace asynchronously; until then our end of the
    # controller link lingers. Delete it ourselves and wait until it is gone.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        subprocess.run(["ip", "link", "del", CTL_LINK], capture_output=True)
        if subprocess.run(["ip", "link", "show", CTL_LINK], capture_output=True).returncode:
            break
        time.sleep(0.1)
    PIDFILE.unlink(missing_ok=True)
    INFO.unlink(missing_ok=True)
    print("demo stopped" if pid is not None or cleaned else "no demo running")
    return 0


def main() -> int:
    verb = sys.argv[1] if len(sys.argv) > 1 else "start"
    verbs: dict[str, Callable[[], int]] = {"start": start, "serve": serve, "stop": stop}
    if verb not in verbs:
        print(f"usage: python -m scripts.demo {{{','.join(verbs)}}}", file=sys.stderr)
        return 2
    return verbs[verb]()


if __name__ == "__main__":
    raise SystemExit(main())
