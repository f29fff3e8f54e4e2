"""Shared fixtures: the netns lab (root tier) and a real Mosquitto broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.broker import Broker, mosquitto_path
from tests.lab.netns import Lab, can_run_lab


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
