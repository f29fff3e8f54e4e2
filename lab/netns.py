"""A throwaway network: a hub, N client devices and an upstream "internet", in netns.

Topology (addresses match examples/hub.yaml)::

    client c1 (eth0 10.42.0.101, fd42::101)   ─┐
    client c2 (eth0 10.42.0.102, fd42::102)   ─┤ veth ports of bridge lan0 (hub)
    ...                                        ─┘
    hub:  lan0 10.42.0.1/24 fd42::1/64 (bridge)    wan0 198.51.100.2/24 2001:db8:1::2/64
    upstream: eth0 198.51.100.1/24 2001:db8:1::1/64, plus one address per test domain;
              HTTP on :80 (Range supported), a TCP listener on :443, DNS (dnsmasq) on :53

Everything is made with iproute2 inside namespaces named ``relais-<pid>-<rand>-<role>``, so
two runs never clash and ``cleanup_stale()`` can remove what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hub_agent.children import pid_alive

PREFIX = "relais-"
HERE = Path(__file__).resolve().parent

LAN_NET = ipaddress.IPv4Network("10.42.0.0/24")
HUB_LAN = "10.42.0.1"
HUB_LAN6 = "fd42::1"
HUB_WAN = "198.51.100.2"
HUB_WAN6 = "2001:db8:1::2"
UPSTREAM = "198.51.100.1"
UPSTREAM6 = "2001:db8:1::1"

# Test domains the upstream DNS answers; each gets its own upstream address.
DOMAINS: dict[str, str] = {
    "example.test": "198.51.100.10",
    "service-public.gouv.tg": "198.51.100.20",
    "cdn.example.test": "198.51.100.30",
}


# A client's DNS A query, run inside its namespace as
# ``python3 -c DNS_QUERY <name> <server>``: prints the first answer's address.
DNS_QUERY = """
import socket, sys
name = sys.argv[1]
q = bytes.fromhex("123401000001000000000000")
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + bytes.fromhex("0000010001")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (sys.argv[2], 53))
print(".".join(map(str, s.recv(512)[-4:])))
"""


class LabError(RuntimeError):
    pass


def run(cmd: Sequence[str], check: bool = True, timeout: float = 30) -> str:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def can_run_lab() -> str | None:
    """None when the lab can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, tc)"
    for tool in ("ip", "nft", "tc", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool} (run `make test`, which installs it)"
    return None


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def kill_netns_processes(ns: str) -> None:
    pids = run(["ip", "netns", "pids", ns], check=False).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts files found here


def delete_netns(ns: str) -> None:
    kill_netns_processes(ns)
    run(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def cleanup_stale() -> list[str]:
    """Delete lab namespaces whose creating process is gone (a run killed mid-test)."""
    removed = []
    for ns in list_netns():
        if not ns.startswith(PREFIX):
            continue
        try:
            pid = int(ns[len(PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            delete_netns(ns)
            removed.append(ns)
    return removed


@dataclass
class Client:
    name: str
    ns: str
    mac: str
    ip: str
    ip6: str
    port: str  # the bridge port's name in the hub namespace

    def exec(
        self, *cmd: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns, *cmd], capture_output=True, text=True, timeout=timeout
        )
        if check and p.returncode != 0:
            raise LabError(f"{self.name}: {' '.join(cmd)} failed: {p.stderr.strip()}")
        return p

    def curl(self, url: str, *args: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
        """curl from this device; stdout is the body, with -w appended if given."""
        return self.exec("curl", "-sS", "--max-time", str(timeout), *args, url, timeout=timeout + 5)


@dataclass
class Lab:
    """Build with ``Lab.create(...)``; always ``close()`` (or use as a context manager)."""

    run_id: str
    hub_ns: str
    upstream_ns: str
    clients: list[Client] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="relais-lab-")))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    lab_nat: bool = True
    lan_prefix: int = 24

    # --- building -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        clients: int = 2,
        nat: bool = True,
        http: bool = True,
        dns: bool = True,
        www_root: Path | None = None,
        lan_prefix: int = 24,
    ) -> Lab:
        """``lan_prefix`` 16 makes room for more than 150 phones (the crowd test)."""
        reason = can_run_lab()
        if reason:
            raise LabError(reason)
        cleanup_stale()
        run_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        lab = cls(
            run_id=run_id,
            hub_ns=f"{PREFIX}{run_id}-hub",
            upstream_ns=f"{PREFIX}{run_id}-up",
            lab_nat=nat,
            lan_prefix=lan_prefix,
        )
        try:
            lab._build(clients, nat)
            if dns:
                lab._start_dns()
            if http:
                lab._start_http(www_root)
        except BaseException:
            lab.close()
            raise
        return lab

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ip(self, ns: str, *args: str) -> str:
        return run(["ip", "-n", ns, *args])

    def _build(self, n_clients: int, nat: bool) -> None:
        hub, up = self.hub_ns, self.upstream_ns
        for ns in (hub, up):
            run(["ip", "netns", "add", ns])
            self.ip(ns, "link", "set", "lo", "up")
        self.sysctl(hub, "net.ipv4.ip_forward", "1")
        self.sysctl(hub, "net.ipv6.conf.all.forwarding", "1")
        for ns in (hub, up):
            self.sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
            self.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")

        # uplink: hub wan0 <-> upstream eth0
        self.ip(hub, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", up)
        self.ip(hub, "addr", "add", f"{HUB_WAN}/24", "dev", "wan0")
        self.ip(hub, "addr", "add", f"{HUB_WAN6}/64", "dev", "wan0", "nodad")
        self.ip(hub, "link", "set", "wan0", "up")
        self.ip(hub, "route", "add", "default", "via", UPSTREAM)
        self.ip(hub, "-6", "route", "add", "default", "via", UPSTREAM6)
        self.ip(up, "addr", "add", f"{UPSTREAM}/24", "dev", "eth0")
        self.ip(up, "addr", "add", f"{UPSTREAM6}/64", "dev", "eth0", "nodad")
        for addr in DOMAINS.values():
            self.ip(up, "addr", "add", f"{addr}/32", "dev", "lo")
        self.ip(up, "link", "set", "eth0", "up")
        # The "internet" routes the LAN's IPv6 back to the hub (no NAT66), and IPv4 only
        # back to the hub's WAN address: without NAT, LAN traffic gets no answer.
        self.ip(up, "-6", "route", "add", "fd42::/64", "via", HUB_WAN6)

        # LAN: bridge lan0 in the hub, one veth port per client
        self.ip(hub, "link", "add", "lan0", "type", "bridge")
        self.ip(hub, "addr", "add", f"{HUB_LAN}/{self.lan_prefix}", "dev", "lan0")
        self.ip(hub, "addr", "add", f"{HUB_LAN6}/64", "dev", "lan0", "nodad")
        self.ip(hub, "link", "set", "lan0", "up")
        for _ in range(n_clients):
            self.add_client()

        if nat:
            # Lab-owned NAT so the plumbing works on its own; the agent owns table `relais`.
            rules = (
                "table ip lab_nat {\n"
                " chain post { type nat hook postrouting priority srcnat; policy accept;\n"
                f'  ip saddr {LAN_NET} oifname "wan0" masquerade\n }}\n}}\n'
            )
            self.nft(hub, rules)

    def add_client(self) -> Client:
        i = len(self.clients) + 1
        name = f"c{i}"
        ns = f"{PREFIX}{self.run_id}-{name}"
        port = f"lanp{i}"
        mac = f"02:42:{(os.getpid() >> 8) & 0xFF:02x}:{os.getpid() & 0xFF:02x}:00:{i:02x}"
        ip4 = str(LAN_NET.network_address + 100 + i)
        ip6 = f"fd42::{100 + i}"
        run(["ip", "netns", "add", ns])
        self.ip(ns, "link", "set", "lo", "up")
        self.sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
        self.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")
        self.ip(
            self.hub_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns
        )
        self.ip(self.hub_ns, "link", "set", port, "master", "lan0")
        self.ip(self.hub_ns, "link", "set", port, "up")
        self.ip(ns, "link", "set", "eth0", "address", mac)
        self.ip(ns, "addr", "add", f"{ip4}/{self.lan_prefix}", "dev", "eth0")
        self.ip(ns, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        self.ip(ns, "link", "set", "eth0", "up")
        self.ip(ns, "route", "add", "default", "via", HUB_LAN)
        self.ip(ns, "-6", "route", "add", "default", "via", HUB_LAN6)
        client = Client(name=name, ns=ns, mac=mac, ip=ip4, ip6=ip6, port=port)
        self.clients.append(client)
        return client

    def sysctl(self, ns: str, key: str, value: str) -> None:
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])

    def nft(self, ns: str, ruleset: str) -> None:
        p = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"],
            input=ruleset,
            text=True,
            capture_output=True,
            timeout=30,
        )
        if p.returncode != 0:
            raise LabError(f"nft in {ns}: {p.stderr.strip()}")

    # --- services -----------------------------------------------------------------
    def spawn(
        self, ns: str, *cmd: str, log: str | None = None, outer: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        """``outer``: words run before entering the namespace (e.g. a cgroup's prefix)."""
        out = open(self.workdir / (log or f"proc{len(self.procs)}.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*outer, "ip", "netns", "exec", ns, *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def _start_dns(self) -> None:
        hosts = self.workdir / "upstream.hosts"
        hosts.write_text("".join(f"{a} {d}\n" for d, a in DOMAINS.items()))
        self.spawn(
            self.upstream_ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={hosts}",
            "--bind-interfaces",
            "--listen-address",
            UPSTREAM,
            "--listen-address",
            "127.0.0.1",
            "--port",
            "53",
            "--user=root",
            f"--pid-file={self.workdir / 'upstream-dnsmasq.pid'}",
            "--log-facility=-",
            log="upstream-dns.log",
        )
        self.wait_port(self.upstream_ns, UPSTREAM, 53, udp=True)

    def _start_http(self, www_root: Path | None) -> None:
        root = www_root or (self.workdir / "www")
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "index.html").exists():
            (root / "index.html").write_text("<h1>upstream internet</h1>\n")
        self.www_root = root
        self.spawn(
            self.upstream_ns,
            sys.executable,
            str(HERE / "upstream_http.py"),
            "--root",
            str(root),
            "--port",
            "80",
            "--tls-port",
            "443",
            log="upstream-http.log",
        )
        self.wait_port(self.upstream_ns, UPSTREAM, 80)

    def wait_port(
        self, ns: str, host: str, port: int, udp: bool = False, timeout: float = 10
    ) -> None:
        deadline = time.monotonic() + timeout
        flag = "-uln" if udp else "-tln"
        while time.monotonic() < deadline:
            out = run(["ip", "netns", "exec", ns, "ss", "-H", flag], check=False)
            if any(f":{port} " in line + " " for line in out.splitlines()):
                return
            time.sleep(0.05)
        logs = "\n".join(p.read_text(errors="replace")[-500:] for p in self.workdir.glob("*.log"))
        raise LabError(f"nothing listens on {host}:{port} in {ns} after {timeout}s\n{logs}")

    # --- convenience --------------------------------------------------------------
    def hub_exec(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.hub_ns, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def resolve_via_hub(self, c: Client) -> None:
        """The device's resolver is the hub (what DHCP would tell a phone), for programs
        run with `ip netns exec` in it: browsing by name, the walled garden by name."""
        d = NETNS_ETC / c.ns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(f"nameserver {HUB_LAN}\n")

    def set_uplink(self, up: bool) -> None:
        """Cut or restore the uplink, as a rural link drops."""
        self.ip(self.hub_ns, "link", "set", "wan0", "up" if up else "down")

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self.procs.clear()
        for c in self.clients:
            delete_netns(c.ns)
        for ns in (self.hub_ns, self.upstream_ns):
            delete_netns(ns)
        shutil.rmtree(self.workdir, ignore_errors=True)
