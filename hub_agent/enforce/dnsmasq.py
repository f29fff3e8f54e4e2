"""DHCP and DNS for the LAN: a pure dnsmasq config renderer and a small process runner.

The hub is the LAN's resolver, and dnsmasq's ``nftset=`` adds the addresses it answers for
walled-garden and zero-rated domains to the sets of table ``inet relais`` (wg4/wg6,
zr4/zr6), which is how "domains" become reachable before login / uncounted after it.
DHCP hands out the RFC 8910 option 114 with the RFC 8908 API URL of the portal.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hub_agent.children import stop_child
from hub_agent.config import HubConfig
from hub_agent.enforce.nft_expr import FAMILY, TABLE

log = logging.getLogger(__name__)

DHCP_OPTION_CAPTIVE_PORTAL = 114  # RFC 8910


def captive_api_url(config: HubConfig) -> str:
    """The RFC 8908 API URL phones get: the portal on the hub's LAN address."""
    host = config.network.lan.address.ip
    if config.portal.https_port:
        return f"https://{host}:{config.portal.https_port}/api/captive"
    return f"http://{host}:{config.portal.http_port}/api/captive"


def leases_path(config: HubConfig) -> Path:
    return config.data_dir / "dnsmasq.leases"


def nftset_lines(walled: Sequence[str], zero_rated: Sequence[str]) -> list[str]:
    """One ``nftset=`` line per group of domains, naming every set each belongs to.

    dnsmasq uses the first ``nftset=`` line that matches a name and ignores the rest, so a
    domain both walled-garden and zero-rated on two lines only ever reached the walled
    garden's set: its downloads were counted against quotas."""
    sets_of: dict[str, list[tuple[str, str]]] = {}
    for domains, pair in ((walled, ("wg4", "wg6")), (zero_rated, ("zr4", "zr6"))):
        for d in sorted(set(domains)):
            sets_of.setdefault(d, []).append(pair)
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for d, in_sets in sets_of.items():
        groups.setdefault(tuple(in_sets), []).append(d)
    lines = []
    for pairs, names in sorted(groups.items()):
        targets = ",".join(f"4#{FAMILY}#{TABLE}#{v4},6#{FAMILY}#{TABLE}#{v6}" for v4, v6 in pairs)
        lines.append(f"nftset=/{'/'.join(names)}/{targets}")
    return lines


def render_dnsmasq(
    config: HubConfig,
    upstream_servers: Sequence[str],
    pid_file: Path | None = None,
    user: str | None = None,
    log_queries: bool = False,
) -> str:
    """dnsmasq.conf for the LAN (one option per line, no secrets)."""
    lan = config.network.lan
    hub = lan.address.ip
    lines = [
        "# written by hub-agent; changes are overwritten",
        f"interface={lan.interface}",
        "bind-dynamic",
        "no-resolv",
        "no-hosts",
        "cache-size=2000",
        "domain-needed",
        "bogus-priv",
        *(f"server={s}" for s in upstream_servers),
        f"dhcp-range={lan.dhcp_start},{lan.dhcp_end},{lan.address.netmask},{lan.lease_minutes}m",
        f"dhcp-option=option:router,{hub}",
        f"dhcp-option=option:dns-server,{hub}",
        f'dhcp-option={DHCP_OPTION_CAPTIVE_PORTAL},"{captive_api_url(config)}"',
        f"dhcp-leasefile={leases_path(config)}",
        "dhcp-authoritative",
    ]
    if lan.address6 is not None:
        lines.append(f"dhcp-range={lan.address6.network.network_address},ra-stateless")
        lines.append("enable-ra")
    lines += nftset_lines(config.walled_garden.domains, config.zero_rated.domains)
    if pid_file is not None:
        lines.append(f"pid-file={pid_file}")
    if user is not None:
        lines.append(f"user={user}")
    if log_queries:
        lines += ["log-queries", "log-dhcp"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Lease:
    expires: int
    mac: str
    ip: str
    hostname: str | None


def parse_leases(text: str) -> list[Lease]:
    """dnsmasq's lease file: ``expiry mac ip hostname client-id`` per line."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1]:
            continue
        out.append(
            Lease(int(parts[0]), parts[1].lower(), parts[2], None if parts[3] == "*" else parts[3])
        )
    return out


class DnsmasqRunner:
    """Runs dnsmasq in the foreground (optionally inside a netns) from a rendered config."""

    def __init__(
        self,
        config: HubConfig,
        upstream_servers: Sequence[str],
        netns: str | None = None,
        conf_dir: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.config = config
        self.upstream_servers = list(upstream_servers)
        self.netns = netns
        self.conf_dir = conf_dir or config.data_dir
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.conf_dir / "dnsmasq.conf"

    @property
    def log_path(self) -> Path:
        return self.conf_dir / "dnsmasq.log"

    def write(self) -> str:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        leases_path(self.config).parent.mkdir(parents=True, exist_ok=True)
        text = render_dnsmasq(self.config, self.upstream_servers, user=self.user)
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.conf_path)  # never a half-written config
        return text

    def start(self, wait_s: float = 5) -> None:
        self.write()
        cmd = [
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            f"--conf-file={self.conf_path}",
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log.info("starting dnsmasq: %s", " ".join(cmd))
        # Its log goes to a file, never a pipe: an undrained pipe fills after weeks of
        # DHCP lines and dnsmasq would block, taking the LAN's DHCP and DNS down.
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dnsmasq exited ({self.proc.returncode}): {err.strip()}")
            if self._listening():
                return
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not start listening on port 53")

    def _listening(self) -> bool:
        cmd = ["ss", "-H", "-uln", "sport", "=", ":53"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return str(self.config.network.lan.address.ip) in out

    def reload(self) -> None:
        """A new config (domains, range): dnsmasq re-reads only some files on SIGHUP, so
        restart it; leases survive in the lease file."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_child(self.proc, group=True)
        self.proc = None
