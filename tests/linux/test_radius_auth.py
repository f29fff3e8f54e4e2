"""Access-Requests against a real FreeRADIUS: accept with its attributes mapped, reject,
failover from a silent primary to the second server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from hub_agent.radius import Accepted, RadiusClient, RadiusUnavailable, Rejected
from lab.radius import FreeRadius, hub_config, require_freeradius

MAC = "02:00:00:00:00:01"


@pytest.fixture(scope="module")
def radius() -> Iterator[FreeRadius]:
    require_freeradius()
    with FreeRadius() as r:
        yield r


@pytest.fixture
def silent() -> Iterator[int]:
    """A UDP port that receives and never answers (no ICMP either): a dead server."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _client(r: FreeRadius) -> RadiusClient:
    return RadiusClient(hub_config(("127.0.0.1", r.auth_port, r.acct_port)))


def test_accept_maps_the_reply_and_sends_the_nas_attributes(radius: FreeRadius) -> None:
    got = asyncio.run(_client(radius).authenticate("alice", "alice-pass", MAC, "10.42.0.100"))
    assert isinstance(got, Accepted)
    p = got.params
    assert (p.down_kbit, p.up_kbit) == (2048, 512)  # WISPr bit/s -> kbit/s
    assert p.quota_bytes == 500_000_000
    assert (p.time_limit_s, p.idle_timeout_s, p.interim_interval_s) == (3600, 600, 120)
    assert got.classes == (b"alice-class",)
    # FreeRADIUS requires a valid Message-Authenticator from this client (the config says
    # so), and logs what it received
    request = radius.log.read_text().split(f'Acct-Session-Id = "{got.session_id}"')[0]
    request = request[request.rindex("Received Access-Request") :]
    for line in (
        "Message-Authenticator = 0x",
        'NAS-Identifier = "tg-demo-mairie-01"',
        'Called-Station-Id = "tg-demo-mairie-01"',
        'Calling-Station-Id = "02-00-00-00-00-01"',
        'WISPr-Location-ID = "isocc=tg,cc=228,ac=0,network=Relais"',
        "WISPr-Location-Name = ",
        "NAS-Port-Type = Wireless-802.11",
    ):
        assert line in request, line
    assert "Framed-IP-Address = 10.42.0.100" in radius.log.read_text()


def test_a_plan_named_in_filter_id(radius: FreeRadius) -> None:
    got = asyncio.run(_client(radius).authenticate("bob", "bob-pass", MAC, None))
    assert isinstance(got, Accepted)
    assert got.params.plan_id == "jour"
    assert (got.params.down_kbit, got.params.quota_bytes) == (4000, 1_000_000_000)
    assert got.params.time_limit_s == 1440 * 60


def test_reject(radius: FreeRadius) -> None:
    client = _client(radius)
    assert asyncio.run(client.authenticate("alice", "wrong", MAC, None)) == Rejected(None)
    got = asyncio.run(client.authenticate("carol", "carol-pass", MAC, None))
    assert got == Rejected("carol is not allowed here")


def test_timeout_fails_over_to_the_second_server(radius: FreeRadius, silent: int) -> None:
    config = hub_config(
        ("127.0.0.1", silent, silent),
        ("127.0.0.1", radius.auth_port, radius.acct_port),
        timeout_s=0.3,
        retries=1,
    )
    client = RadiusClient(config)

    async def twice() -> tuple[float, float]:
        t0 = time.monotonic()
        first = await client.authenticate("alice", "alice-pass", MAC, None)
        t1 = time.monotonic()
        second = await client.authenticate("alice", "alice-pass", MAC, None)
        assert isinstance(first, Accepted) and isinstance(second, Accepted)
        return t1 - t0, time.monotonic() - t1

    slow, fast = asyncio.run(twice())
    assert slow >= 0.6  # two tries of 0.3 s at the silent primary
    assert fast < 0.3  # the primary is now tried last: no wait for the next login


def test_no_server_answering_is_unavailable(silent: int) -> None:
    client = RadiusClient(hub_config(("127.0.0.1", silent, silent), timeout_s=0.1, retries=0))
    with pytest.raises(RadiusUnavailable):
        asyncio.run(client.authenticate("alice", "alice-pass", MAC, None))
