"""The dnsmasq config renderer and lease parser (pure)."""

from __future__ import annotations

from pathlib import Path

from hub_agent.config import HubConfig, load_config, validate_config
from hub_agent.enforce.dnsmasq import captive_api_url, parse_leases, render_dnsmasq

ROOT = Path(__file__).resolve().parents[2]


def _config(**over: object) -> HubConfig:
    data = load_config(ROOT / "examples" / "hub.yaml", env={}).to_wire()
    data["data_dir"] = "/srv/relais"
    data.update(over)
    return validate_config(data)


def test_render_lan_dhcp_dns_and_option_114() -> None:
    cfg = _config(zero_rated={"domains": ["cours.example.tg"], "cidrs": []})
    lines = render_dnsmasq(cfg, ["198.51.100.1", "9.9.9.9"]).splitlines()
    assert "interface=lan0" in lines and "no-resolv" in lines
    assert "server=198.51.100.1" in lines and "server=9.9.9.9" in lines
    assert "dhcp-range=10.42.0.100,10.42.0.250,255.255.255.0,60m" in lines
    assert "dhcp-option=option:dns-server,10.42.0.1" in lines
    assert 'dhcp-option=114,"http://10.42.0.1:8080/api/captive"' in lines
    assert "dhcp-leasefile=/srv/relais/dnsmasq.leases" in lines
    assert "nftset=/service-public.gouv.tg/4#inet#relais#wg4,6#inet#relais#wg6" in lines
    assert "nftset=/cours.example.tg/4#inet#relais#zr4,6#inet#relais#zr6" in lines


def test_https_portal_url_and_no_nftset_without_domains() -> None:
    cfg = _config(walled_garden={"domains": [], "cidrs": []})
    portal = dict(cfg.portal.model_dump(mode="json"), https_port=8443)
    portal["tls_cert"], portal["tls_key"] = "/etc/relais/cert.pem", "/etc/relais/key.pem"
    cfg = _config(walled_garden={"domains": [], "cidrs": []}, portal=portal)
    assert captive_api_url(cfg) == "https://10.42.0.1:8443/api/captive"
    text = render_dnsmasq(cfg, [])
    assert "wg4" not in text and "server=" not in text


def test_parse_leases() -> None:
    text = (
        "1700000000 02:42:aa:bb:cc:01 10.42.0.150 phone-amy 01:02:42:aa:bb:cc:01\n"
        "1700000100 02:42:AA:BB:CC:02 10.42.0.151 * *\n"
        "duid 00:01:00:01\n"
    )
    leases = parse_leases(text)
    assert [(x.mac, x.ip, x.hostname) for x in leases] == [
        ("02:42:aa:bb:cc:01", "10.42.0.150", "phone-amy"),
        ("02:42:aa:bb:cc:02", "10.42.0.151", None),
    ]


def test_a_domain_in_both_lists_is_one_nftset_line_naming_every_set() -> None:
    # dnsmasq takes the first matching nftset= line only: two lines for one domain left
    # the zero-rated set empty and the government site counted against quotas (issue 21)
    garden = {"domains": ["service-public.gouv.tg", "a.tg"], "cidrs": []}
    zero = {"domains": ["service-public.gouv.tg", "b.tg"], "cidrs": []}
    lines = render_dnsmasq(_config(walled_garden=garden, zero_rated=zero), []).splitlines()
    sets = [ln for ln in lines if ln.startswith("nftset=")]
    both = "4#inet#relais#wg4,6#inet#relais#wg6,4#inet#relais#zr4,6#inet#relais#zr6"
    assert f"nftset=/service-public.gouv.tg/{both}" in sets
    assert "nftset=/a.tg/4#inet#relais#wg4,6#inet#relais#wg6" in sets
    assert "nftset=/b.tg/4#inet#relais#zr4,6#inet#relais#zr6" in sets
    for domain in ("service-public.gouv.tg", "a.tg", "b.tg"):
        assert sum(f"/{domain}/" in ln for ln in sets) == 1
