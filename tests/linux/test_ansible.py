"""The hub and controller roles applied for real to a throwaway Debian root.

A bookworm minbase root made by debootstrap (cached under /var/cache/relais-test, so only
the first run pays for it) is copied per test module; the playbooks run into it through
ansible/connection_plugins/relais_chroot.py, twice: the second run must change nothing.
Then the installed files are checked with the tools the box itself would use: the venv's
own config loader, `systemd-analyze verify`, the chroot's mosquitto and sqlite3.
Services are not started by the playbook (no systemd runs in a chroot): the tests set
relais_manage_services=false. Then the deployed hub root is booted with systemd-nspawn in
the lab's hub namespace and a real systemd starts the hardened units, which a phone uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# A cold cache (debootstrap, wheelhouse) makes the first fixture slower than the default.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = REPO / ".venv" / "bin"
CACHE = Path(os.environ.get("RELAIS_TEST_CACHE", "/var/cache/relais-test"))
SUITE = "bookworm"
# Bump when the recipe below changes so old caches are not reused.
BASE_NAME = f"{SUITE}-minbase-v1"
# What a freshly installed Debian hub has before Ansible: python3 to run modules, systemd.
BASE_INCLUDE = ["python3", "systemd", "ca-certificates"]
HUB_ID = "tg-test-mairie-01"


# --------------------------------------------------------------------------------------
# Skips with a reason
# --------------------------------------------------------------------------------------


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("ansible chroot test skipped: needs root (chroot, mount)")
    missing = [t for t in ("debootstrap", "chroot", "mount") if not shutil.which(t)]
    if missing:
        pytest.skip(f"ansible chroot test skipped: {', '.join(missing)} not installed")
    if not (VENV_BIN / "ansible-playbook").exists():
        pytest.skip("ansible chroot test skipped: ansible-core not in .venv (pip install .[dev])")


# --------------------------------------------------------------------------------------
# The cached Debian root
# --------------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        with contextlib.suppress(OSError):
            text = f.read_text()
            for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
                if m.group(1).rstrip("/").endswith("/debian"):
                    return m.group(1)
            for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M):
                if m.group(1).rstrip("/").endswith("/debian"):
                    return m.group(1)
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base() -> Path:
    """The cached minbase root, built once with debootstrap (about a minute)."""
    base = CACHE / "rootfs" / BASE_NAME
    if (base / ".relais-complete").exists():
        return base
    with _cache_lock():
        if (base / ".relais-complete").exists():
            return base
        tmp = base.with_name(base.name + ".partial")
        if tmp.exists():
            _remove_root(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_INCLUDE)}",
                SUITE,
                str(tmp),
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
        )
        # A build root, not a booted box: package scripts must not start daemons
        # (dnsmasq, mosquitto, hostapd) on the build machine's network.
        policy = tmp / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (tmp / "var/cache/apt/archives").mkdir(parents=True, exist_ok=True)
        # apt keeps no downloaded packages in the image; the test mounts a shared cache.
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        (tmp / ".relais-complete").write_text(debian_mirror() + "\n")
        tmp.rename(base)
    return base


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_root(root: Path) -> None:
    """Unmount everything under ``root``, check nothing is left, then delete it."""
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    left = _mounts_under(root)
    if left:  # never rm -rf through a bind mount
        raise RuntimeError(f"still mounted under {root}: {left}")
    shutil.rmtree(root)


@contextlib.contextmanager
def throwaway_root(workdir: Path) -> Iterator[Path]:
    """A copy of the cached root with /proc mounted and apt's downloads pre-seeded.

    Downloaded packages are shared through hard links, not a bind mount: concurrent test
    sessions never contend for apt's lock, and nothing outside the root is mounted in it.
    """
    base = ensure_base()
    root = workdir / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    debs = CACHE / "apt-archives"
    debs.mkdir(parents=True, exist_ok=True)
    archives = root / "var/cache/apt/archives"
    _link_debs(debs, archives)
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        yield root
    finally:
        with contextlib.suppress(OSError):
            _link_debs(archives, debs)
        _remove_root(root)


def _link_debs(src: Path, dst: Path) -> None:
    for deb in src.glob("*.deb"):
        target = dst / deb.name
        if not target.exists():
            try:
                os.link(deb, target)
            except OSError:  # another file system: copy instead
                shutil.copy2(deb, target)


def in_root(root: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.run(
        ["chroot", str(root), *argv], capture_output=True, text=True, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


# --------------------------------------------------------------------------------------
# The relais package: a fresh wheel of this checkout, dependencies from a cached wheelhouse
# --------------------------------------------------------------------------------------


def _dependency_key() -> str:
    """Changes only when the runtime dependencies do (other pyproject edits keep the cache)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return hashlib.sha256(json.dumps(sorted(project["dependencies"])).encode()).hexdigest()[:16]


def build_packages(workdir: Path) -> tuple[Path, Path]:
    """(relais wheel, wheelhouse archive of its dependencies): an offline install."""
    src = workdir / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("hub_agent", "captive_portal", "provisioning"):
        shutil.copytree(
            REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    dist = workdir / "dist"
    pip = [str(VENV_BIN / "python"), "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(src)], check=True)
    (wheel,) = dist.glob("relais-*.whl")
    house = CACHE / f"wheelhouse-{_dependency_key()}"
    archive = house.with_name(house.name + ".tar.gz")
    with _cache_lock():
        if not archive.exists():
            shutil.rmtree(house, ignore_errors=True)
            subprocess.run([*pip, "wheel", "-w", str(house), str(src)], check=True)
            for own in house.glob("relais-*.whl"):
                own.unlink()
            partial = archive.with_name(archive.name + ".partial")
            subprocess.run(["tar", "-C", str(house), "-czf", str(partial), "."], check=True)
            partial.rename(archive)
            shutil.rmtree(house)
            for stale in CACHE.glob("wheelhouse-*.tar.gz"):
                if stale != archive:
                    stale.unlink()
    return wheel, archive


# --------------------------------------------------------------------------------------
# Running the playbooks
# --------------------------------------------------------------------------------------

_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass
class Run:
    rc: int
    output: str

    @property
    def recap(self) -> dict[str, int]:
        for line in self.output.splitlines():
            m = _RECAP.match(line)
            if m:
                keys = ("ok", "changed", "unreachable", "failed")
                return dict(zip(keys, map(int, m.groups()[1:]), strict=True))
        raise AssertionError(f"no PLAY RECAP in the output:\n{self.output[-3000:]}")

    def changed_tasks(self) -> list[str]:
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                tasks.append(current)
        return tasks


def run_playbook(
    workdir: Path, playbook: str, group: str, root: Path, extra: dict[str, Any], *args: str
) -> Run:
    inventory = workdir / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                group: {
                    "hosts": {
                        root.name: {
                            "ansible_host": str(root),
                            "ansible_connection": "relais_chroot",
                            "ansible_become": False,
                        }
                    }
                }
            }
        )
    )
    varsfile = workdir / f"vars-{playbook}.json"
    varsfile.write_text(json.dumps({"relais_manage_services": False, **extra}))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOME": str(workdir / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / ".ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(inventory),
            "-e",
            f"@{varsfile}",
            *args,
            playbook,
        ],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


def apply_twice(
    workdir: Path, playbook: str, group: str, root: Path, extra: dict[str, Any]
) -> tuple[Run, Run]:
    first = run_playbook(workdir, playbook, group, root, extra)
    assert first.rc == 0, first.output[-6000:]
    assert first.recap["changed"] > 0
    second = run_playbook(workdir, playbook, group, root, extra)
    assert second.rc == 0, second.output[-6000:]
    return first, second


def verify_units(root: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify of the root's own unit files, resolved inside the root."""
    paths = [f"/etc/systemd/system/{u}" for u in units]
    return in_root(root, "systemd-analyze", "verify", *paths, check=False)


def exposure(root: Path, unit: str) -> float:
    """systemd-analyze security's overall exposure (0 safest .. 10), offline in the root."""
    proc = in_root(
        root, "systemd-analyze", "security", "--offline=yes", f"/etc/systemd/system/{unit}"
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout[-2000:]
    return float(m.group(1))


def exec_start(unit: str) -> str:
    return next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))


def assert_flags_exist(root: Path, command_line: str, *help_argv: str) -> None:
    """Every --flag in ``command_line`` is one the installed command's --help lists."""
    usage = in_root(root, *help_argv, "--help").stdout
    for flag in re.findall(r"(?:^| )(--[a-z][a-z-]*)", command_line):
        assert flag in usage, f"{' '.join(help_argv)} has no {flag}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------
# Fixtures: one root per role, applied twice
# --------------------------------------------------------------------------------------


@dataclass
class Deployment:
    root: Path
    workdir: Path
    extra: dict[str, Any]
    first: Run
    second: Run

    def run(self, playbook: str, group: str, *args: str, **overrides: Any) -> Run:
        return run_playbook(
            self.workdir, playbook, group, self.root, {**self.extra, **overrides}, *args
        )


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    _require_tools()
    return build_packages(tmp_path_factory.mktemp("relais-packages"))


@dataclass
class Enrollment:
    host_vars: dict[str, Any]
    caretaker_password: str


def enroll_on_host(state: Path, hub_id: str) -> Enrollment:
    """`hubctl enroll` from this checkout, into its own state folder: the real host_vars."""
    cmd = [str(VENV_BIN / "hubctl"), "--state", str(state), "enroll", hub_id]
    cmd += ["--kind", "mairie", "--name", "Mairie de Test", "--region", "Maritime"]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    m = re.search(r"Caretaker password \(shown once\): (\S+)", proc.stdout)
    assert m, proc.stdout
    host_vars = yaml.safe_load((state / "ansible" / "host_vars" / f"{hub_id}.yml").read_text())
    return Enrollment(host_vars, m.group(1))


@pytest.fixture(scope="module")
def enrollment(tmp_path_factory: pytest.TempPathFactory) -> Enrollment:
    _require_tools()
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("hub test skipped: hubctl enroll needs mosquitto_passwd (make test installs)")
    return enroll_on_host(tmp_path_factory.mktemp("central"), HUB_ID)


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory,
    packages: tuple[Path, Path],
    enrollment: Enrollment,
) -> Iterator[Deployment]:
    """A hub deployed twice from the host_vars `hubctl enroll` wrote for it."""
    wheel, house = packages
    workdir = tmp_path_factory.mktemp("hub")
    extra = {
        **enrollment.host_vars,
        "relais_package_src": str(wheel),
        "relais_pip_wheelhouse": str(house),
        # As group_vars/hubs.yml sets it: SQLite and content on their own partition.
        "relais_data_device": "/dev/disk/by-label/relais-data",
    }
    with throwaway_root(workdir) as root:
        first, second = apply_twice(workdir, "hub.yml", "hubs", root, extra)
        yield Deployment(root, workdir, extra, first, second)


@pytest.fixture(scope="module")
def controller(
    tmp_path_factory: pytest.TempPathFactory, packages: tuple[Path, Path]
) -> Iterator[Deployment]:
    """The controller with a lab TLS certificate, listeners on free loopback ports."""
    wheel, house = packages
    workdir = tmp_path_factory.mktemp("controller")
    extra = {
        "relais_package_src": str(wheel),
        "relais_pip_wheelhouse": str(house),
        "relais_mqtt_tls_self_signed": True,
        "relais_mqtt_tls_common_name": "localhost",
        "relais_mqtt_tls_subject_alt_names": ["DNS:localhost", "IP:127.0.0.1"],
        "relais_mosquitto_listeners": [
            {"port": free_port(), "address": "127.0.0.1", "tls": True},
            {"port": free_port(), "address": "127.0.0.1", "tls": False},
        ],
        "relais_backup_keep": 2,
    }
    with throwaway_root(workdir) as root:
        first, second = apply_twice(workdir, "controller.yml", "controllers", root, extra)
        yield Deployment(root, workdir, extra, first, second)


# --------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------


def test_hub_role_is_idempotent(hub: Deployment) -> None:
    assert hub.first.recap["changed"] >= 10, hub.first.changed_tasks()
    assert hub.second.recap["changed"] == 0, hub.second.changed_tasks()
    assert hub.second.recap["failed"] == 0


def test_hub_commands_run_from_the_venv(hub: Deployment) -> None:
    for cmd in ("hub-agent", "captive-portal", "hubctl"):
        proc = in_root(hub.root, f"/opt/relais/venv/bin/{cmd}", "--help")
        assert "usage" in proc.stdout.lower(), cmd


def test_hub_config_is_the_enrollment_and_passes_the_agent_schema(
    hub: Deployment, enrollment: Enrollment
) -> None:
    code = (
        "import json; from hub_agent.config import load_config;"
        "c = load_config('/etc/relais/hub.yaml', env={});"
        "print(json.dumps(c.to_wire()))"
    )
    wire = json.loads(in_root(hub.root, "/opt/relais/venv/bin/python", "-c", code).stdout)
    hv = enrollment.host_vars
    assert wire["hub"]["id"] == hv["relais_hub_id"] == HUB_ID
    assert wire["mqtt"]["url"] == hv["relais_mqtt_url"]
    assert wire["mqtt"]["username"] == hv["relais_mqtt_username"]
    assert wire["mqtt"]["password"] == hv["relais_mqtt_password"]
    assert wire["trust"]["central_public_key"] == hv["relais_central_public_key"]
    assert wire["portal"]["admin_password_hash"] == hv["relais_admin_password_hash"]
    assert wire["portal"]["agent_socket"] == "/run/relais/agent.sock"
    assert wire["data_dir"] == "/var/lib/relais"
    # The rest is the enrollment's document untouched.
    assert wire["plans"] == hv["relais_hub_config"]["plans"]
    assert wire["network"] == hv["relais_hub_config"]["network"]
    # The caretaker password hubctl printed opens /admin with the hash the hub holds.
    check = (
        "import sys; from captive_portal.security import verify_password;"
        "from hub_agent.config import load_config;"
        "c = load_config('/etc/relais/hub.yaml', env={});"
        "print(verify_password(sys.argv[1], c.portal.admin_password_hash))"
    )
    py = "/opt/relais/venv/bin/python"
    out = in_root(hub.root, py, "-c", check, enrollment.caretaker_password).stdout
    assert out.strip() == "True"


def _owner(root: Path, path: str) -> tuple[str, str, str]:
    out = in_root(root, "stat", "-c", "%U %G %a", path).stdout.split()
    return out[0], out[1], out[2]


def test_hub_secrets_are_readable_only_by_root_and_the_portal(hub: Deployment) -> None:
    assert _owner(hub.root, "/etc/relais/hub.yaml") == ("root", "relais-portal", "640")
    assert _owner(hub.root, "/etc/relais") == ("root", "relais-portal", "750")
    assert _owner(hub.root, "/var/lib/relais") == ("root", "relais-portal", "751")
    user = in_root(hub.root, "getent", "passwd", "relais-portal").stdout.split(":")
    assert user[6].strip() == "/usr/sbin/nologin" and int(user[2]) < 1000
    # The broker password never reaches Ansible's output.
    for run in (hub.first, hub.second):
        assert hub.extra["relais_mqtt_password"] not in run.output


def test_hub_units_pass_systemd_analyze_verify(hub: Deployment) -> None:
    units = ["relais-agent.service", "relais-portal.service", "var-lib-relais.mount"]
    proc = verify_units(hub.root, units)
    assert proc.returncode == 0, proc.stderr
    assert "relais" not in proc.stderr, proc.stderr


def test_hub_units_are_hardened(hub: Deployment) -> None:
    agent = (hub.root / "etc/systemd/system/relais-agent.service").read_text()
    portal = (hub.root / "etc/systemd/system/relais-portal.service").read_text()
    assert "ExecStart=/opt/relais/venv/bin/hub-agent run --config /etc/relais/hub.yaml" in agent
    assert "ExecStart=/opt/relais/venv/bin/captive-portal --config /etc/relais/hub.yaml" in portal
    for unit in (agent, portal):
        for line in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict"):
            assert line in unit
    assert_flags_exist(hub.root, exec_start(agent), "/opt/relais/venv/bin/hub-agent", "run")
    assert_flags_exist(hub.root, exec_start(portal), "/opt/relais/venv/bin/captive-portal")
    assert "ReadWritePaths=/var/lib/relais" in agent
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", agent, re.M)
    assert caps and "CAP_NET_ADMIN" in caps.group(1) and "CAP_SYS_ADMIN" not in caps.group(1)
    assert re.search(r"^User=relais-portal$", portal, re.M)
    assert re.search(r"^CapabilityBoundingSet=$", portal, re.M)
    # systemd's own score (0 safest .. 10): the unprivileged portal must stay near the
    # floor; the agent is root with network capabilities by design.
    assert exposure(hub.root, "relais-portal.service") <= 2.0
    assert exposure(hub.root, "relais-agent.service") <= 4.0


def test_hub_portal_serves_as_its_unprivileged_user(hub: Deployment) -> None:
    """The installed portal, run as relais-portal, reads the 0640 config and answers."""
    port = free_port()
    cmd = ["chroot", str(hub.root), "runuser", "-u", "relais-portal", "--"]
    cmd += ["/opt/relais/venv/bin/captive-portal", "--config", "/etc/relais/hub.yaml"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"the portal did not start: {err[-2000:]}")
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        status = reply.split(b"\r\n", 1)[0]
        assert b" 200 " in status, reply[:500]
        assert b"<html" in reply.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_hub_masks_the_distribution_nginx(hub: Deployment) -> None:
    unit = hub.root / "etc/systemd/system/nginx.service"
    assert unit.is_symlink() and os.readlink(unit) == "/dev/null"
    assert (hub.root / "usr/sbin/nginx").exists()


def test_hub_without_radio_skips_hostapd(hub: Deployment) -> None:
    assert "hostapd skipped" in hub.first.output
    assert not (hub.root / "usr/sbin/hostapd").exists()
    assert not (hub.root / "etc/hostapd/hostapd.conf").exists()
    journald = (hub.root / "etc/systemd/journald.conf.d/relais.conf").read_text()
    assert "SystemMaxUse=200M" in journald


def test_hub_refuses_a_bad_config_and_keeps_the_old_one(hub: Deployment) -> None:
    before = (hub.root / "etc/relais/hub.yaml").read_bytes()
    bad = json.loads(json.dumps(hub.extra["relais_hub_config"]))
    bad["plans"][0]["down_kbit"] = -5
    run = hub.run("hub.yml", "hubs", "--tags", "relais_config", relais_hub_config=bad)
    assert run.rc != 0
    assert (hub.root / "etc/relais/hub.yaml").read_bytes() == before
    assert hub.extra["relais_mqtt_password"] not in run.output


def test_hub_with_wifi_gets_an_open_access_point_for_togo(hub: Deployment) -> None:
    wifi = {"relais_wifi_enabled": True, "relais_wifi_channel": 11}
    # 17 characters but 34 bytes: too long for an SSID, refused before anything is written.
    too_long = "É" * 17
    run = hub.run("hub.yml", "hubs", "--tags", "relais_wifi", relais_wifi_ssid=too_long, **wifi)
    assert run.rc != 0 and "longer than 32 bytes" in run.output
    assert not (hub.root / "etc/hostapd/hostapd.conf").exists()
    runs = [
        hub.run(
            "hub.yml",
            "hubs",
            "--tags",
            "relais_wifi",
            relais_wifi_ssid="Relais Mairie Démo",
            **wifi,
        )
        for _ in range(2)
    ]
    assert runs[0].rc == 0, runs[0].output[-4000:]
    assert runs[1].rc == 0 and runs[1].recap["changed"] == 0, runs[1].changed_tasks()
    assert (hub.root / "usr/sbin/hostapd").exists()
    conf = dict(
        line.split("=", 1)
        for line in (hub.root / "etc/hostapd/hostapd.conf").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert conf["ssid"] == "Relais Mairie Démo" and conf["utf8_ssid"] == "1"
    assert (conf["country_code"], conf["channel"], conf["wpa"]) == ("TG", "11", "0")
    assert conf["bridge"] == "lan0" and conf["ap_isolate"] == "1"
    assert _owner(hub.root, "/etc/hostapd/hostapd.conf")[2] == "600"


def test_hub_rebuilt_package_with_the_same_version_is_reinstalled(hub: Deployment) -> None:
    """pip keeps an installed version when handed the same version again; the role must
    notice the new file and replace the code anyway, then settle."""
    wheel = Path(hub.extra["relais_package_src"])
    src = hub.workdir / "rebuilt-src"
    shutil.copytree(wheel.parent.parent / "src", src)
    marker = f"REBUILD_MARKER = {time.time_ns()}"
    with (src / "hub_agent" / "__init__.py").open("a") as f:
        f.write(f"\n{marker}\n")
    dist = hub.workdir / "rebuilt-dist"
    pip = [str(VENV_BIN / "python"), "-m", "pip", "-q", "wheel", "--no-deps", "-w", str(dist)]
    subprocess.run([*pip, str(src)], check=True, capture_output=True)
    (rebuilt,) = dist.glob("relais-*.whl")
    assert rebuilt.name == wheel.name
    runs = [
        hub.run("hub.yml", "hubs", "--tags", "relais_package", relais_package_src=str(rebuilt))
        for _ in range(2)
    ]
    assert runs[0].rc == 0, runs[0].output[-4000:]
    assert "relais_package : Reinstall relais when its package file changed" in (
        runs[0].changed_tasks()
    )
    code = "import hub_agent; print(hub_agent.REBUILD_MARKER)"
    out = in_root(hub.root, "/opt/relais/venv/bin/python", "-c", code).stdout.strip()
    assert f"REBUILD_MARKER = {out}" == marker
    assert runs[1].rc == 0 and runs[1].recap["changed"] == 0, runs[1].changed_tasks()


# --------------------------------------------------------------------------------------
# The hub booted: a real systemd starts the hardened units in the lab's hub namespace
# --------------------------------------------------------------------------------------


@dataclass
class Booted:
    """The deployed root booted with systemd-nspawn (root read-only under a tmpfs overlay,
    so later tests see it unchanged); ``sh`` runs a command inside it."""

    proc: subprocess.Popen[bytes]
    leader: int
    log: Path

    def sh(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        enter = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-r", "-w"]
        return subprocess.run(
            [*enter, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    def journal(self, unit: str) -> str:
        return self.sh("journalctl", "-u", unit, "-n", "60", "--no-pager").stdout


def _leader(nspawn: subprocess.Popen[bytes], timeout: float = 30) -> int:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and nspawn.poll() is None:
        for child in psutil.Process(nspawn.pid).children():
            with contextlib.suppress(psutil.Error):
                if child.name() == "systemd":
                    return int(child.pid)
        time.sleep(0.2)
    raise AssertionError("the container's systemd did not start")


@contextlib.contextmanager
def booted(root: Path, netns: str, log: Path, *binds: str) -> Iterator[Booted]:
    cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-D", str(root)]
    cmd += ["--volatile=overlay", f"--network-namespace-path=/run/netns/{netns}"]
    cmd += ["--capability=CAP_NET_ADMIN"]  # a box's root has it; nspawn drops it by default
    cmd += [f"--bind={b}" for b in binds]
    cmd += ["--boot"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        box = Booted(proc, _leader(proc), log)
        # systemctl answers nothing until the container's manager takes connections (a
        # just-stopped earlier container makes that slower): ask again until it says
        deadline = time.monotonic() + 120
        state, err = "", ""
        while time.monotonic() < deadline and state not in ("running", "degraded"):
            r = box.sh("systemctl", "is-system-running", "--wait", timeout=120)
            state, err = r.stdout.strip(), r.stderr.strip()
            if state in ("", "offline", "unknown"):
                time.sleep(0.5)
        assert state in ("running", "degraded"), f"{state!r} {err}\n" + log.read_text()[-3000:]
        yield box
    finally:
        proc.terminate()  # nspawn asks the container's systemd for a clean poweroff
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _running(box: Booted, *units: str) -> None:
    """Each unit active and never restarted (a crash loop would show as NRestarts > 0)."""
    for unit in units:
        shown = box.sh("systemctl", "show", "-p", "ActiveState,NRestarts", unit).stdout
        assert "ActiveState=active" in shown and "NRestarts=0" in shown, (
            unit,
            shown,
            box.journal(unit),
        )


def test_hub_services_run_under_systemd(hub: Deployment, tmp_path: Path) -> None:
    """systemd-analyze cannot tell whether the sandboxing lets the agent drive nftables and
    tc, or the unprivileged portal reach the agent's socket: boot the box and use it."""
    if not shutil.which("systemd-nspawn"):
        pytest.skip("boot test skipped: systemd-nspawn missing (make test installs it)")
    from lab.netns import UPSTREAM, Lab
    from tests.linux.test_agent_e2e import PORTAL, _get, _login

    # The data partition: a copy of what the role left there, mounted where the unit
    # expects it (systemd then finds relais_data_dir mounted).
    data = tmp_path / "data"
    subprocess.run(["cp", "-a", str(hub.root / "var/lib/relais"), str(data)], check=True)
    log = tmp_path / "boot.log"
    with (
        Lab.create(clients=1) as lab,
        booted(hub.root, lab.hub_ns, log, f"{data}:/var/lib/relais") as box,
    ):
        started = box.sh("systemctl", "start", "relais-agent.service", "relais-portal.service")
        assert started.returncode == 0, started.stderr
        phone = lab.clients[0]
        deadline = time.monotonic() + 90
        while _get(phone, PORTAL + "/")[0] != "200" and time.monotonic() < deadline:
            time.sleep(1)
        units = "relais-agent.service", "relais-portal.service"
        why = "\n".join(box.journal(u) for u in units)
        assert _get(phone, PORTAL + "/")[0] == "200", why
        # The agent's firewall, from inside its sandbox: the phone is sent to the portal.
        assert _get(phone, f"http://{UPSTREAM}/")[:2] == ("302", PORTAL + "/"), why
        # A voucher from the box's own CLI; the login goes portal -> socket -> agent -> nft.
        plan = str(hub.extra["relais_hub_config"]["plans"][0]["id"])
        issued = box.sh(
            "/opt/relais/venv/bin/hub-agent", "vouchers", "issue",
            "--config", "/etc/relais/hub.yaml", "--plan", plan, "--count", "1",
        )  # fmt: skip
        assert issued.returncode == 0, issued.stderr
        _login(phone, issued.stdout.split()[0])
        assert "upstream internet" in phone.curl(f"http://{UPSTREAM}/", timeout=5).stdout, why
        _running(box, *units)  # neither restarted along the way


# --------------------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------------------


def test_controller_role_is_idempotent(controller: Deployment) -> None:
    assert controller.first.recap["changed"] >= 10, controller.first.changed_tasks()
    assert controller.second.recap["changed"] == 0, controller.second.changed_tasks()


def test_controller_refuses_tls_without_a_certificate(controller: Deployment) -> None:
    run = controller.run(
        "controller.yml",
        "controllers",
        "--tags",
        "relais_mosquitto",
        relais_mqtt_tls_self_signed=False,
        relais_mqtt_tls_certfile="/etc/ssl/relais/missing.crt",
    )
    assert run.rc != 0
    assert "/etc/ssl/relais/missing.crt and" in run.output and "must exist" in run.output


def test_controller_units_pass_systemd_analyze_verify(controller: Deployment) -> None:
    units = [
        "relais-controller.service",
        "relais-broker-sync.service",
        "relais-broker-sync.path",
        "relais-registry-backup.service",
        "relais-registry-backup.timer",
    ]
    proc = verify_units(controller.root, units)
    assert proc.returncode == 0, proc.stderr
    assert "relais" not in proc.stderr, proc.stderr
    unit = (controller.root / "etc/systemd/system/relais-controller.service").read_text()
    assert re.search(r"^ExecStart=/opt/relais/venv/bin/hubctl .*controller run", unit, re.M)
    top, sub = exec_start(unit).split(" controller run")
    hubctl = "/opt/relais/venv/bin/hubctl"
    assert_flags_exist(controller.root, top, hubctl)
    assert_flags_exist(controller.root, sub, hubctl, "controller", "run")
    assert exposure(controller.root, "relais-controller.service") <= 2.0
    assert exposure(controller.root, "relais-registry-backup.service") <= 2.0


def enroll_in_root(root: Path, hub_id: str) -> tuple[str, str]:
    """The installed hubctl, run as the controller's user: (username, password) of the hub."""
    in_root(
        root,
        "runuser",
        "-u",
        "relais-central",
        "--",
        "/opt/relais/venv/bin/hubctl",
        "--state",
        "/var/lib/relais-central",
        "enroll",
        hub_id,
        "--kind",
        "school",
        "--name",
        f"École {hub_id}",
    )
    path = root / f"var/lib/relais-central/ansible/host_vars/{hub_id}.yml"
    hv = yaml.safe_load(path.read_text())
    return str(hv["relais_mqtt_username"]), str(hv["relais_mqtt_password"])


@dataclass
class Broker:
    proc: subprocess.Popen[bytes]
    tls_port: int
    plain_port: int
    cafile: Path

    def publish(self, user: str, password: str, topic: str, msg: str) -> int:
        cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.tls_port)]
        cmd += ["--cafile", str(self.cafile), "-u", user, "-P", password]
        cmd += ["-t", topic, "-m", msg, "-q", "1", "-V", "5"]
        return subprocess.run(cmd, capture_output=True, timeout=10, check=False).returncode


@contextlib.contextmanager
def chroot_mosquitto(d: Deployment) -> Iterator[Broker]:
    """The mosquitto the role installed, with the config it wrote, run inside the root."""
    tls, plain = (int(x["port"]) for x in d.extra["relais_mosquitto_listeners"])
    proc = subprocess.Popen(
        ["chroot", str(d.root), "mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", plain)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"mosquitto did not start: {err}")
            time.sleep(0.05)
        yield Broker(proc, tls, plain, d.root / "etc/mosquitto/relais/server.crt")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _subscribe(broker: Broker, user: str, password: str, seconds: float) -> subprocess.Popen[str]:
    cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.plain_port), "-V", "5"]
    cmd += ["-u", user, "-P", password, "-t", "relais/#", "-v", "-q", "1"]
    cmd += ["-W", str(seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_controller_broker_takes_hubctl_files_tls_and_acl(controller: Deployment) -> None:
    if not shutil.which("mosquitto_pub"):
        pytest.skip("broker check skipped: mosquitto-clients not installed on this machine")
    root = controller.root
    a_user, a_pw = enroll_in_root(root, "tg-a")
    sync = in_root(root, "relais-broker-sync", "--no-reload", "--report")
    assert sync.stdout.strip() == "updated"
    assert _owner(root, "/etc/mosquitto/relais/passwd") == ("root", "mosquitto", "640")
    # Run again with nothing new: nothing to do (the role's own task relies on it).
    assert in_root(root, "relais-broker-sync", "--no-reload", "--report").stdout == ""
    secret = json.loads((root / "var/lib/relais-central/secrets/controller.json").read_text())
    with chroot_mosquitto(controller) as broker:
        sub = _subscribe(broker, secret["username"], secret["password"], 5)
        time.sleep(0.5)
        assert broker.publish(a_user, a_pw, "relais/hubs/tg-a/health", "own") == 0
        broker.publish(a_user, a_pw, "relais/hubs/tg-b/health", "forged")
        assert broker.publish(a_user, "wrong", "relais/hubs/tg-a/health", "x") != 0
        # A new enrollment: hubctl rewrites its files, the sync copies, SIGHUP rereads.
        b_user, b_pw = enroll_in_root(root, "tg-b")
        assert in_root(root, "relais-broker-sync", "--no-reload", "--report").stdout.strip()
        broker.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert broker.publish(b_user, b_pw, "relais/hubs/tg-b/health", "new hub") == 0
        out, _ = sub.communicate(timeout=15)
    lines = out.splitlines()
    assert "relais/hubs/tg-a/health own" in lines
    assert "relais/hubs/tg-b/health new hub" in lines
    assert not any("forged" in line for line in lines)


def test_controller_broker_config_is_sized_for_offline_hubs(controller: Deployment) -> None:
    conf = (controller.root / "etc/mosquitto/mosquitto.conf").read_text()
    settings = dict(
        line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert settings["allow_anonymous"] == "false"
    assert settings["persistence"] == "true"
    assert settings["set_tcp_nodelay"] == "true"
    assert settings["persistent_client_expiration"] == "30d"
    assert int(settings["max_queued_messages"]) >= 100_000
    assert int(settings["max_inflight_messages"]) >= 20


def test_registry_backup_is_consistent_and_keeps_the_newest(controller: Deployment) -> None:
    root = controller.root
    enroll_in_root(root, "tg-backup")  # the registry as hubctl keeps it (SQLite, WAL)
    made = []
    for _ in range(3):
        out = in_root(root, "runuser", "-u", "relais-central", "--", "relais-registry-backup")
        made.append(out.stdout.split()[-1])
    kept = sorted(p.name for p in (root / "var/backups/relais-central").iterdir())
    assert kept == sorted(Path(m).name for m in made[1:])  # keep=2: the two newest
    newest = f"{made[-1]}/registry.db"
    assert in_root(root, "sqlite3", newest, "PRAGMA integrity_check").stdout.strip() == "ok"
    ids = in_root(root, "sqlite3", newest, "SELECT id FROM hubs").stdout.split()
    assert "tg-backup" in ids
    tar = in_root(root, "tar", "tzf", f"{made[-1]}/state.tar.gz").stdout.split()
    assert "./central.yaml" in tar and not any("registry.db" in t for t in tar)


def test_controller_services_run_under_systemd(controller: Deployment, tmp_path: Path) -> None:
    """The controller booted: an enrollment made on the box reaches the broker through the
    path unit and a reload, a hub's reports come in over TLS, the fleet shows it online."""
    if not shutil.which("systemd-nspawn") or not shutil.which("mosquitto_pub"):
        pytest.skip("boot test skipped: systemd-nspawn or mosquitto_pub missing (make test)")
    tls = int(controller.extra["relais_mosquitto_listeners"][0]["port"])
    netns = f"relais-ctl-{os.getpid()}-{time.monotonic_ns() % 10_000}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with booted(controller.root, netns, tmp_path / "boot.log") as box:
            units = ("mosquitto.service", "relais-controller.service")
            started = box.sh("systemctl", "start", *units, "relais-broker-sync.path")
            assert started.returncode == 0, started.stderr
            hubctl = ["runuser", "-u", "relais-central", "--", "/opt/relais/venv/bin/hubctl"]
            hubctl += ["--state", "/var/lib/relais-central"]
            enrolled = box.sh(*hubctl, "enroll", "tg-boot", "--kind", "school", "--name", "É")
            assert enrolled.returncode == 0, enrolled.stderr
            host_vars = "/var/lib/relais-central/ansible/host_vars/tg-boot.yml"
            hv = yaml.safe_load(box.sh("cat", host_vars).stdout)
            user, password = hv["relais_mqtt_username"], hv["relais_mqtt_password"]
            cafile = controller.root / "etc/mosquitto/relais/server.crt"

            def publish(topic: str, doc: dict[str, Any], *flags: str) -> int:
                cmd = ["ip", "netns", "exec", netns, "mosquitto_pub", "-h", "127.0.0.1"]
                cmd += ["-p", str(tls), "--cafile", str(cafile), "-u", user, "-P", password]
                cmd += ["-t", f"relais/hubs/tg-boot/{topic}", "-m", json.dumps(doc)]
                cmd += ["-q", "1", "-V", "5", *flags]
                return subprocess.run(cmd, capture_output=True, timeout=10).returncode

            now = time.time()
            state = {"online": True, "ts": now, "agent_version": "t", "config_version": 1}
            # The path unit syncs the broker's files and reloads it: no manual step.
            deadline = time.monotonic() + 30
            while publish("state", {**state, "session": 1}, "-r") != 0:
                why = box.journal("relais-broker-sync.service") + box.journal("mosquitto.service")
                assert time.monotonic() < deadline, why
                time.sleep(0.5)
            assert publish("health", {"hub_id": "tg-boot", "seq": 1, "ts": round(now)}) == 0
            row: dict[str, Any] = {}
            deadline = time.monotonic() + 30
            while row.get("status") != "online" and time.monotonic() < deadline:
                time.sleep(0.5)
                fleet = box.sh(*hubctl, "fleet", "--json")
                rows = json.loads(fleet.stdout or "[]")
                row = next((r for r in rows if r["id"] == "tg-boot"), {})
            assert row.get("status") == "online", (
                f"{row}\n{box.journal('relais-controller.service')}"
            )

            page = subprocess.run(
                ["ip", "netns", "exec", netns, "curl", "-sS", "--max-time", "5",
                 "http://127.0.0.1:8090/"],  # the role's default fleet page
                capture_output=True, text=True, timeout=15,
            )  # fmt: skip
            assert "tg-boot" in page.stdout, page.stderr
            _running(box, *units)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
