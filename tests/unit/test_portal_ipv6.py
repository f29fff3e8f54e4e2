"""The portal on the LAN's IPv6 address too: where it listens, and redirects that name an
address the asking phone can reach (its own family). The portal runs against the real
agent (real_agent.py); the lab test is tests/linux/test_portal_ipv6_lab.py."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from captive_portal.app import create_app
from captive_portal.cli import Listeners, listen_on, server_configs
from captive_portal.live_config import LiveConfig
from captive_portal.routes.probes import PROBES
from captive_portal.settings import build_settings
from hub_agent.config import HubConfig, validate_config
from hub_agent.portal_view import write_portal_view
from lab.broker import free_port
from tests.unit.real_agent import (
    DEV1,
    HUB_URL,
    MAC1,
    Hub,
    config_dict,
    login,
    running_hub,
    tls_config_dict,
)
from tests.unit.test_portal_fastpath import _routes_only

DEV1_6 = "fd42::42:39ff:feef:1"  # DEV1's SLAAC address
HUB_URL6 = "http://[fd42::1]:8080"


def _tls(tmp_path: Path, **lan: object) -> HubConfig:
    data = tls_config_dict(tmp_path)
    data["network"]["lan"].update(lan)
    return validate_config(data)


@pytest.mark.parametrize("v6", ["fd42::101", DEV1_6, "fe80::1"])
def test_a_phone_asking_over_ipv6_is_sent_to_the_ipv6_address(tmp_path: Path, v6: str) -> None:
    st = build_settings(_tls(tmp_path))
    assert st.splash_url("10.42.0.101") == st.base_url == "http://10.42.0.1:8080/"
    assert st.api_url("10.42.0.101") == st.api_base_url == "https://10.42.0.1:8443/"
    assert st.splash_url(v6) == "http://[fd42::1]:8080/"
    assert st.api_url(v6) == "https://[fd42::1]:8443/"
    assert st.splash_url("") == st.base_url  # no client address (a test client): IPv4


def test_without_an_ipv6_address_or_tls_every_phone_gets_the_ipv4_urls(tmp_path: Path) -> None:
    no6 = build_settings(_tls(tmp_path, address6=None))
    assert no6.base_url6 is None and no6.secure_base_url6 is None
    assert no6.splash_url(DEV1_6) == "http://10.42.0.1:8080/"
    assert no6.api_url(DEV1_6) == "https://10.42.0.1:8443/"
    data = config_dict(tmp_path / "s", http_port=80)
    plain = build_settings(validate_config(data))
    assert plain.splash_url(DEV1_6) == plain.api_url(DEV1_6) == "http://[fd42::1]/"
    assert plain.splash_url(DEV1) == plain.api_url(DEV1) == "http://10.42.0.1/"
    # --port moves both; --host (ipv6=False): the portal listens there only
    moved = build_settings(validate_config(data), listen_port=8090)
    assert moved.splash_url(DEV1_6) == "http://[fd42::1]:8090/"
    host_only = build_settings(validate_config(data), ipv6=False)
    assert host_only.splash_url(DEV1_6) == host_only.base_url == "http://10.42.0.1/"


def test_the_portal_listens_on_both_lan_addresses_unless_told_a_host(tmp_path: Path) -> None:
    config = _tls(tmp_path)
    assert listen_on(config, None, None) == (("10.42.0.1", "fd42::1"), 8080)
    assert listen_on(config, "127.0.0.1", 9000) == (("127.0.0.1",), 9000)
    no6 = _tls(tmp_path, address6=None)
    assert listen_on(no6, None, None) == (("10.42.0.1",), 8080)
    app = create_app(config, secret=b"s" * 32)
    got = [
        (c.host, c.port, c.ssl_certfile is not None)
        for c in server_configs(config, app, *listen_on(config, None, None))
    ]
    assert got == [
        ("10.42.0.1", 8080, False),  # first: its loop factory runs the portal
        ("fd42::1", 8080, False),
        ("10.42.0.1", 8443, True),
        ("fd42::1", 8443, True),
    ]


def _v6_phone(hub: Hub) -> None:
    hub.agent.neighbours[DEV1_6] = MAC1  # the kernel's IPv6 neighbour entry for the phone


def test_probes_foreign_hosts_and_the_api_name_the_ipv6_url_for_an_ipv6_phone(
    tmp_path: Path,
) -> None:
    with running_hub(tmp_path) as hub:
        _v6_phone(hub)
        for ip, base in ((DEV1_6, HUB_URL6), (DEV1, HUB_URL)):
            c = hub.client(ip, base)
            for path in PROBES:
                r = c.get(path, headers={"Host": "connectivitycheck.gstatic.com"})
                assert (r.status_code, r.headers["location"]) == (302, base + "/"), path
            r = c.get("http://example.com/news")
            assert (r.status_code, r.headers["location"]) == (302, base + "/")
            doc = json.loads(c.get("/api/captive").text)
            assert doc["user-portal-url"] == base + "/" and doc["captive"] is True
            assert doc["venue-info-url"] == base + "/content/"
            page = c.get("/")
            assert page.status_code == 200 and 'name="csrf"' in page.text


def test_fast_answers_are_the_routes_answers_for_an_ipv6_phone(tmp_path: Path) -> None:
    """The fast path's probe cache holds one answer per family: neither leaks to the other."""
    with running_hub(tmp_path) as hub:
        _v6_phone(hub)
        routed = _routes_only(hub)

        Answer = tuple[str, int, list[tuple[str, str]], bytes]

        async def answers(app: FastAPI, ip: str, base: str) -> list[Answer]:
            transport = httpx.ASGITransport(app=app, client=(ip, 40000))
            async with httpx.AsyncClient(transport=transport, base_url=base) as c:
                out: list[Answer] = []
                for path in (*PROBES, "/api/captive"):
                    r = await c.get(path)
                    out.append((path, r.status_code, sorted(r.headers.items()), r.content))
                return out

        async def run() -> None:
            # v4, v6, then v4 again: the fast path's cached v6 probe answers stay v6's
            for ip, base in ((DEV1, HUB_URL), (DEV1_6, HUB_URL6), (DEV1, HUB_URL)):
                fast = await answers(hub.app, ip, base)
                assert fast == await answers(routed, ip, base)
                locations = {dict(h).get("location") for _, st, h, _ in fast if st == 302}
                assert locations == {base + "/"}, (ip, locations)
                api = json.loads(fast[-1][3])
                assert api["user-portal-url"] == base + "/", api

        asyncio.run(run())


def test_a_phone_logs_in_over_ipv6_and_keeps_its_ipv4_address(tmp_path: Path) -> None:
    """The agent knows the phone by the MAC of its IPv6 neighbour; the kernel's grant keeps
    the IPv4 address it pairs with that MAC (IPv6 is authorised by MAC alone)."""
    with running_hub(tmp_path) as hub:
        _v6_phone(hub)
        c = hub.client(DEV1_6, HUB_URL6)
        r = login(c, hub.agent.issue("heure"))
        assert r.status_code == 200 and "Vous êtes connecté" in r.text, r.text[:500]
        assert hub.agent.kernel.grants[MAC1].ip == DEV1
        assert c.get("/generate_204").status_code == 204
        assert hub.client(DEV1).get("/generate_204").status_code == 204  # same MAC: through
        status = c.get("/status")
        assert status.status_code == 200 and "Vous êtes connecté" in status.text


def test_a_new_ipv6_address_moves_the_listeners(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        view = write_portal_view(hub.config, group=None)
        live = LiveConfig(hub.app.state.portal, view, build_settings)
        moves: list[object] = []
        live.on_listen = lambda c: moves.append(c.network.lan.address6)
        asyncio.run(live.refresh())
        wire = hub.config.to_wire()
        wire["version"] = hub.config.version + 1
        wire["network"]["lan"]["address6"] = "fd43::1/64"
        write_portal_view(validate_config(wire), group=None)
        assert asyncio.run(live.refresh()) and [str(m) for m in moves] == ["fd43::1/64"]
        r = hub.client(DEV1_6).get("/generate_204")  # not a neighbour: captive
        assert r.headers["location"] == "http://[fd43::1]:8080/"


def test_uvicorn_serves_both_families_and_each_is_redirected_in_its_own(tmp_path: Path) -> None:
    """cli's listeners for real (uvicorn on the loopbacks as the two LAN addresses)."""
    with running_hub(tmp_path) as hub:
        config = hub.config
        port = free_port()
        app = create_app(config, secret=b"s" * 32)

        def make(c: HubConfig) -> list[uvicorn.Config]:
            return server_configs(c, app, ("127.0.0.1", "::1"), port)

        async def probe(host: str) -> httpx.Response | None:
            async with httpx.AsyncClient() as c:
                try:
                    return await c.get(f"http://{host}:{port}/generate_204", timeout=2)
                except httpx.TransportError:
                    return None

        async def scenario() -> None:
            listeners = Listeners(make, config)
            serving = asyncio.create_task(listeners.run())
            try:
                for host, splash in (("127.0.0.1", HUB_URL), ("[::1]", HUB_URL6)):
                    deadline = time.monotonic() + 60  # generous: the shared box is loaded
                    while (r := await probe(host)) is None:
                        assert time.monotonic() < deadline and not serving.done(), host
                        await asyncio.sleep(0.05)
                    # unknown to the agent (no neighbour): captive, sent in its own family
                    assert (r.status_code, r.headers["location"]) == (302, splash + "/")
            finally:
                listeners.stop()
                await serving

        asyncio.run(scenario())
