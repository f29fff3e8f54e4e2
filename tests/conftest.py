"""Shared fixtures: the netns lab (root tier), a real Mosquitto broker and the centre's
database on both engines (SQLite, a throwaway PostgreSQL server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.broker import Broker, mosquitto_path
from lab.netns import Lab, can_run_lab
from lab.postgres import PgServer, pg_bin


def require_lab() -> None:
    reason = can_run_lab()
    if reason:
        pytest.skip(f"lab test skipped: {reason}")


def require_mosquitto() -> None:
    if mosquitto_path() is None:
        pytest.skip("broker test skipped: mosquitto is not installed (make test installs it)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A hub, two clients and an upstream internet with HTTP and DNS; NAT by the lab."""
    require_lab()
    with Lab.create(clients=2) as built:
        yield built


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh anonymous broker on a free loopback port; tests may add users and an ACL."""
    require_mosquitto()
    with Broker() as b:
        yield b


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the session (initdb/pg_ctl in a temp dir)."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL test skipped: initdb/pg_ctl not installed (package postgresql)")
    with PgServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def central_db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """The centre's registry URL, once per engine: a SQLite file, then a fresh database
    on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite://{request.getfixturevalue('tmp_path')}/central/registry.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_database()
