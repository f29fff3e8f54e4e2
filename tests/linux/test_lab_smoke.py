"""The lab is real: traffic crosses a hub that routes and NATs to an upstream namespace."""

from __future__ import annotations

import pytest

from lab.netns import DNS_QUERY, DOMAINS, UPSTREAM, Lab, list_netns

pytestmark = pytest.mark.root


def test_client_fetches_upstream_page_through_hub(lab: Lab) -> None:
    c1 = lab.clients[0]
    r = c1.curl(f"http://{UPSTREAM}/")
    assert r.returncode == 0, r.stderr
    assert "upstream internet" in r.stdout
    # The hub really routes: the client's only way out is its default route via lan0.
    route = c1.exec("ip", "route", "get", UPSTREAM, check=True).stdout
    assert "via 10.42.0.1" in route


def test_ipv4_works_only_because_the_hub_nats(lab: Lab) -> None:
    # Upstream has no IPv4 route to the LAN: without the hub's masquerade no answer returns.
    c1 = lab.clients[0]
    assert c1.curl(f"http://{UPSTREAM}/").returncode == 0
    lab.hub_exec("nft", "delete", "table", "ip", "lab_nat")
    assert c1.curl(f"http://{UPSTREAM}/", timeout=2).returncode != 0


def test_upstream_dns_answers_test_domains(lab: Lab) -> None:
    c1 = lab.clients[0]
    for name, addr in DOMAINS.items():
        r = c1.exec("python3", "-c", DNS_QUERY, name, UPSTREAM)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == addr
    # and the domains' addresses answer HTTP
    assert "upstream internet" in c1.curl(f"http://{DOMAINS['example.test']}/").stdout


def test_ipv6_reaches_upstream_routed(lab: Lab) -> None:
    r = lab.clients[0].curl("http://[2001:db8:1::1]/")
    assert r.returncode == 0, r.stderr
    assert "upstream internet" in r.stdout


def test_clients_have_distinct_macs_and_namespaces(lab: Lab) -> None:
    macs = {c.mac for c in lab.clients}
    assert len(macs) == len(lab.clients)
    for c in lab.clients:
        link = c.exec("ip", "link", "show", "eth0", check=True).stdout
        assert c.mac in link


def test_plumbing_failure_is_loud(lab: Lab) -> None:
    lab.set_uplink(False)
    r = lab.clients[0].curl(f"http://{UPSTREAM}/", timeout=2)
    assert r.returncode != 0
    lab.set_uplink(True)
    assert lab.clients[0].curl(f"http://{UPSTREAM}/").returncode == 0


def test_teardown_removes_every_namespace() -> None:
    from tests.conftest import require_lab

    require_lab()
    lab = Lab.create(clients=1, http=False, dns=False)
    names = {lab.hub_ns, lab.upstream_ns, lab.clients[0].ns}
    assert names <= set(list_netns())
    lab.close()
    assert not names & set(list_netns())
