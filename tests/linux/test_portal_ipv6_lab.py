"""A phone that reaches the web over IPv6 gets the splash page, in the real lab.

The hub (`hub-agent run` and `captive-portal`, tests/linux/test_agent_e2e.py's lab) has
``network.lan.address6``; nftables redirects a captive phone's IPv6 port-80 traffic to the
hub's IPv6 address, where the portal listens too. A phone asking over IPv6 is sent to the
portal's IPv6 URL (a dual-stack phone tries AAAA first; an IPv6-only one has nothing else),
loads the splash there, logs in with a voucher over IPv6 (the agent finds its MAC from its
IPv6 neighbour entry) and then reaches upstream over both families; an IPv4 phone is
served over IPv4 as before.
"""

from __future__ import annotations

import json

import pytest

from lab.netns import HUB_LAN6, UPSTREAM, UPSTREAM6, Client
from tests.linux.test_agent_e2e import (
    PORTAL,
    _get,
    _login,
    _reaches_upstream,
    running_hub,
)
from tests.linux.test_config_live_lab import wait_for

pytestmark = pytest.mark.root

PORTAL6 = f"http://[{HUB_LAN6}]:8080"


def get6(c: Client, url: str, *args: str) -> tuple[str, str, str]:
    """``_get`` over IPv6 only (-g: the brackets are an address, not a curl glob)."""
    return _get(c, url, "-6", "-g", *args)


def reaches_upstream6(c: Client) -> bool:
    r = c.curl(f"http://[{UPSTREAM6}]/", "-6", "-g", timeout=3)
    return r.returncode == 0 and "upstream internet" in r.stdout


def test_a_phone_on_ipv6_is_sent_to_the_portal_and_logs_in_there() -> None:
    with running_hub() as hub:
        c1, c2 = hub.lab.clients

        def splash6() -> bool:  # the IPv6 listener starts beside the IPv4 one
            code, _, page = get6(c1, PORTAL6 + "/")
            return code == "200" and 'name="csrf"' in page

        wait_for("the splash page over IPv6", splash6, hub)

        # Captive over IPv6: a web request and an OS probe are sent to the IPv6 URL.
        code, location, _ = get6(c1, f"http://[{UPSTREAM6}]/")
        assert (code, location) == ("302", PORTAL6 + "/"), hub.log("portal.log")
        code, location, _ = get6(c1, f"http://[{UPSTREAM6}]/generate_204")
        assert (code, location) == ("302", PORTAL6 + "/")
        assert not reaches_upstream6(c1)
        # RFC 8908 over IPv6 names the IPv6 URLs
        code, _, body = get6(c1, PORTAL6 + "/api/captive")
        doc = json.loads(body)
        assert code == "200" and doc["captive"] is True, body
        assert doc["user-portal-url"] == PORTAL6 + "/", doc

        # A voucher login over IPv6 (the agent knows the phone by its IPv6 neighbour).
        page = _login(c1, hub.voucher, PORTAL6)
        assert "Vous êtes connecté" in page, page[:800]
        wait_for("c1 online over IPv6", lambda: reaches_upstream6(c1), hub)
        assert _reaches_upstream(c1)  # one MAC, both families
        code, _, page = get6(c1, PORTAL6 + "/status")  # whoami over IPv6: its session
        assert code == "200" and "Vous êtes connecté" in page, page[:800]
        assert get6(c1, f"http://[{UPSTREAM6}]/generate_204")[0] != "302"

        # An IPv4 phone is served over IPv4 as before, and stays captive on both families.
        code, location, _ = _get(c2, f"http://{UPSTREAM}/")
        assert (code, location) == ("302", PORTAL + "/")
        code, _, page = _get(c2, PORTAL + "/")
        assert code == "200" and 'name="csrf"' in page, page[:500]
        assert get6(c2, f"http://[{UPSTREAM6}]/")[:2] == ("302", PORTAL6 + "/")
        assert not _reaches_upstream(c2) and not reaches_upstream6(c2)
        assert hub.agent.poll() is None and hub.portal.poll() is None
