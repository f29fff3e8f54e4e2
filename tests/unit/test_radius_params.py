"""Access-Accept attributes -> session parameters; CoA attributes -> changes; the
Access-Request's attributes."""

from __future__ import annotations

from pathlib import Path

import yaml

from hub_agent.config import HubConfig, validate_config
from hub_agent.radius.packets import Nas, access_request_attrs, station_mac
from hub_agent.radius.params import Change, Defaults, change_from, named_plan, session_params

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
DEFAULTS = Defaults(down_kbit=2000, up_kbit=1000, idle_timeout_s=900, interim_interval_s=300)


def _config() -> HubConfig:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["radius"] = {"primary": {"address": "127.0.0.1", "secret": "s3cret-s3cret"}}
    return validate_config(data)


PLANS = _config().plans


def test_wispr_and_chillispot_attributes() -> None:
    p = session_params(
        {
            "Session-Timeout": [3600],
            "Idle-Timeout": [600],
            "Acct-Interim-Interval": [120],
            "WISPr-Bandwidth-Max-Up": [512_000],
            "WISPr-Bandwidth-Max-Down": [2_048_000],
            "ChilliSpot-Max-Total-Octets": [500_000_000],
        },
        PLANS,
        DEFAULTS,
    )
    assert (p.down_kbit, p.up_kbit, p.quota_bytes) == (2048, 512, 500_000_000)
    assert (p.time_limit_s, p.idle_timeout_s, p.interim_interval_s) == (3600, 600, 120)
    assert p.plan_id is None


def test_nothing_but_accept_gives_the_defaults() -> None:
    p = session_params({}, PLANS, DEFAULTS)
    assert (p.down_kbit, p.up_kbit, p.quota_bytes, p.time_limit_s) == (2000, 1000, None, None)
    assert (p.idle_timeout_s, p.interim_interval_s) == (900, 300)


def test_chillispot_kbit_and_zero_means_no_limit() -> None:
    p = session_params(
        {
            "ChilliSpot-Bandwidth-Max-Down": [3000],
            "WISPr-Bandwidth-Max-Up": [0],
            "Session-Timeout": [0],
            "ChilliSpot-Max-Total-Octets": [0],
        },
        PLANS,
        DEFAULTS,
    )
    assert (p.down_kbit, p.up_kbit, p.time_limit_s, p.quota_bytes) == (3000, 1000, None, None)


def test_interim_interval_has_a_floor_and_rates_a_ceiling() -> None:
    p = session_params(
        {"Acct-Interim-Interval": [5], "WISPr-Bandwidth-Max-Down": [10**10]}, PLANS, DEFAULTS
    )
    assert p.interim_interval_s == 60  # RFC 2869 5.16
    assert p.down_kbit == 1_000_000


def test_plan_named_in_filter_id_or_class_and_attributes_override() -> None:
    jour = {"Filter-Id": ["jour"]}
    p = session_params(jour, PLANS, DEFAULTS)
    assert p.plan_id == "jour"
    assert (p.down_kbit, p.up_kbit, p.quota_bytes) == (4000, 1000, 1_000_000_000)
    assert (p.time_limit_s, p.idle_timeout_s) == (1440 * 60, 30 * 60)
    p = session_params({"Class": [b"plan=heure"], "Session-Timeout": [60]}, PLANS, DEFAULTS)
    assert (p.plan_id, p.time_limit_s, p.quota_bytes) == ("heure", 60, 300_000_000)
    assert named_plan({"Class": [b"\xffjunk"], "Filter-Id": ["nope"]}, PLANS) is None


def test_coa_change_only_names_what_changes() -> None:
    assert change_from({"WISPr-Bandwidth-Max-Down": [1_000_000]}, PLANS) == Change(down_kbit=1000)
    assert change_from({"User-Name": ["x"]}, PLANS).empty()
    assert change_from({"Filter-Id": ["heure"]}, PLANS).plan_id == "heure"


def test_access_request_attributes() -> None:
    config = _config()
    nas = Nas.from_config(config)
    attrs = dict(access_request_attrs(nas, "alice", "02:00:00:0a:bb:01", "10.42.0.7", "SID"))
    assert attrs["NAS-Identifier"] == config.hub.id == attrs["Called-Station-Id"]
    assert attrs["Calling-Station-Id"] == "02-00-00-0A-BB-01" == station_mac("02:00:00:0a:bb:01")
    assert attrs["Framed-IP-Address"] == "10.42.0.7"
    assert attrs["WISPr-Location-Name"] == config.hub.name
    assert attrs["Acct-Session-Id"] == "SID"
    assert "User-Password" not in attrs  # hidden per server, with its secret
    assert "Framed-IP-Address" not in dict(
        access_request_attrs(nas, "a", "02:00:00:00:00:01", None, "S")
    )
