"""A real FreeRADIUS for tests: generated minimal config, users file, detail file, loopback.

The config is written from scratch (no copy of /etc/freeradius): PAP against a users file,
accounting to one detail file, one client (127.0.0.1) per secret. Ports are chosen free;
``stop``/``start`` keep them, so an outage can be simulated and healed.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hub_agent.config import HubConfig, validate_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hub.yaml"
SECRET = "testing123-relais"
FREERADIUS = shutil.which("freeradius") or "/usr/sbin/freeradius"
RADCLIENT = shutil.which("radclient") or "/usr/bin/radclient"

USERS = """\
alice   Cleartext-Password := "alice-pass"
        Session-Timeout = 3600,
        Idle-Timeout = 600,
        Acct-Interim-Interval = 120,
        WISPr-Bandwidth-Max-Up = 512000,
        WISPr-Bandwidth-Max-Down = 2048000,
        ChilliSpot-Max-Total-Octets = 500000000,
        Class = "alice-class"

bob     Cleartext-Password := "bob-pass"
        Filter-Id = "jour",
        Reply-Message = "Bienvenue"

carol   Cleartext-Password := "carol-pass", Calling-Station-Id != "02-00-00-00-00-01"
        Reply-Message = "wrong device"

carol   Auth-Type := Reject
        Reply-Message = "carol is not allowed here"
"""

RADIUSD_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
datarootdir = /usr/share
dictdir = /usr/share/freeradius
libdir = /usr/lib/freeradius
raddbdir = {dir}
confdir = {dir}
modconfdir = {dir}
logdir = {dir}
radacctdir = {dir}
run_dir = {dir}
pidfile = {dir}/radiusd.pid
name = freeradius
max_request_time = 30
cleanup_delay = 0
max_requests = 1024
hostname_lookups = no
log {{
    destination = stdout
    auth = yes
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = yes
}}
thread pool {{
    start_servers = 2
    max_servers = 4
    min_spare_servers = 1
    max_spare_servers = 2
}}
client hub {{
    ipaddr = {client}
    secret = {secret}
    require_message_authenticator = yes
}}
modules {{
    pap {{
    }}
    files {{
        filename = {dir}/users
    }}
    detail {{
        filename = {dir}/detail
        escape_filenames = no
        permissions = 0600
        header = "%t"
    }}
}}
server default {{
    listen {{
        type = auth
        ipaddr = {listen}
        port = {auth_port}
    }}
    listen {{
        type = acct
        ipaddr = {listen}
        port = {acct_port}
    }}
    authorize {{
        files
        pap
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
    }}
    accounting {{
        detail
    }}
    post-auth {{
    }}
}}
"""


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def require_freeradius() -> None:
    if not Path(FREERADIUS).exists() or not Path(RADCLIENT).exists():
        pytest.skip("radius test skipped: freeradius/radclient not installed (make test does)")


@dataclass
class FreeRadius:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="relais-rad-")))
    auth_port: int = 0
    acct_port: int = 0
    secret: str = SECRET
    proc: subprocess.Popen[bytes] | None = None
    listen: str = "127.0.0.1"
    client: str = "127.0.0.1"  # the NAS (hub) address it accepts requests from
    netns: str | None = None  # run inside this network namespace (the lab's upstream)

    def __post_init__(self) -> None:
        self.auth_port = self.auth_port or free_udp_port()
        self.acct_port = self.acct_port or free_udp_port()
        (self.workdir / "users").write_text(USERS)
        (self.workdir / "dictionary").write_text("")
        (self.workdir / "radiusd.conf").write_text(
            RADIUSD_CONF.format(
                dir=self.workdir,
                secret=self.secret,
                auth_port=self.auth_port,
                acct_port=self.acct_port,
                listen=self.listen,
                client=self.client,
            )
        )

    @property
    def log(self) -> Path:
        return self.workdir / "radiusd.log"

    @property
    def detail(self) -> Path:
        return self.workdir / "detail"

    def start(self, timeout: float = 10) -> None:
        out = self.log.open("ab")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, FREERADIUS, "-X", "-d", str(self.workdir), "-n", "radiusd"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ready to process requests" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"freeradius did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> FreeRadius:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def records(self) -> list[dict[str, str]]:
        """The detail file's accounting records, values unquoted."""
        if not self.detail.exists():
            return []
        out = []
        for block in self.detail.read_text().split("\n\n"):
            rec: dict[str, str] = {}
            for line in block.splitlines()[1:]:
                m = re.match(r"^\s+([\w-]+) = (.*)$", line)
                if m:
                    rec[m.group(1)] = m.group(2).strip('"')
            if rec:
                out.append(rec)
        return out


def radclient(
    port: int,
    code: str,
    attrs: dict[str, str],
    secret: str,
    timeout: float = 1.0,
    host: str = "127.0.0.1",
    netns: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """FreeRADIUS' radclient sending one request (``disconnect`` or ``coa``) to ``host``.

    Values are written as given (quote strings yourself)."""
    text = "\n".join(f"{k} = {v}" for k, v in attrs.items()) + "\n"
    target = (f"{host}:{port}", code)
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with tempfile.TemporaryDirectory(prefix="relais-radclient-") as raddb:
        (Path(raddb) / "dictionary").write_text("")  # not /etc's (readable by freerad only)
        return subprocess.run(
            [*prefix, RADCLIENT, "-x", "-r", "1", "-t", str(timeout), "-d", raddb, *target, secret],
            input=text,
            capture_output=True,
            text=True,
            timeout=timeout * 3 + 5,
        )


def hub_config(
    primary: tuple[str, int, int],
    secondary: tuple[str, int, int] | None = None,
    secret: str = SECRET,
    timeout_s: float = 0.3,
    retries: int = 1,
    **radius: object,
) -> HubConfig:
    """The example hub config with a radius section: (address, auth port, acct port)."""

    def server(addr: tuple[str, int, int]) -> dict[str, object]:
        host, auth, acct = addr
        return {
            "address": host,
            "auth_port": auth,
            "acct_port": acct,
            "secret": secret,
            "timeout_s": timeout_s,
            "retries": retries,
        }

    data = yaml.safe_load(EXAMPLE.read_text())
    data["radius"] = {
        "primary": server(primary),
        "location_id": "isocc=tg,cc=228,ac=0,network=Relais",
        **radius,
    }
    if secondary is not None:
        data["radius"]["secondary"] = server(secondary)
    return validate_config(data)
