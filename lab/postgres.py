"""A throwaway PostgreSQL server for the centre's storage tests (not the system service).

``initdb`` in a fresh temp dir, ``pg_ctl start`` listening only on a UNIX socket in that
dir (no port to collide with), stop and delete afterwards. PostgreSQL refuses to run as
root, so as root the cluster belongs to the ``postgres`` user that Debian's package
creates (else ``nobody``) and the server runs under ``runuser``; the tests connect over
the socket as the cluster's superuser with trust auth. Durability is switched off
(fsync, synchronous_commit): these are tests, not a registry.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

PG_VERSIONS = ("17", "16", "15")


def pg_bin() -> Path | None:
    for v in PG_VERSIONS:
        d = Path(f"/usr/lib/postgresql/{v}/bin")
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _run_as() -> tuple[list[str], str]:
    """(prefix, owner) to run the server's commands with."""
    if os.geteuid() != 0:
        return [], pwd.getpwuid(os.geteuid()).pw_name
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"], user
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


class PgServer:
    def __init__(self) -> None:
        binaries = pg_bin()
        if binaries is None:
            raise FileNotFoundError("initdb/pg_ctl not found (Debian package 'postgresql')")
        self.bin = binaries
        self.prefix, self.owner = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="relais-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self._names = itertools.count(1)

    def _cmd(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self.prefix, *args], check=True, capture_output=True, timeout=timeout, cwd="/"
        )

    def start(self) -> PgServer:
        pw = pwd.getpwnam(self.owner)
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._cmd(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        opts = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}'"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=100"
        )
        self._cmd(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={quote(str(self.socket_dir), safe='')}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database on this server; its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")  # fmt: skip
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
