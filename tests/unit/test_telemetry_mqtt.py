"""The MQTT wrapper's pure parts: backoff with jitter, settings from the config."""

from __future__ import annotations

from typing import Any

import pytest

from hub_agent.config import validate_config
from hub_agent.mqtt.core import RECONNECT_MAX_S, Backoff, BrokerUrl, backoff_delay
from hub_agent.mqtt.link import LinkSettings, state_payload
from hub_agent.telemetry import topics


def cfg(**mqtt: Any) -> Any:
    return validate_config(
        {
            "version": 3,
            "hub": {"id": "tg-x-1", "kind": "school", "name": "X"},
            "portal": {"login_methods": ["free"]},
            "mqtt": mqtt,
        }
    )


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    lo = [backoff_delay(a, 1.0, 60.0, rnd=lambda: 0.0) for a in range(8)]
    hi = [backoff_delay(a, 1.0, 60.0, rnd=lambda: 1.0) for a in range(8)]
    assert lo == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert hi == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000, 1.0, 60.0) <= 60  # no overflow on a long outage


def test_the_default_policy_retries_within_seconds_after_an_outage() -> None:
    # Issue 14: once the broker is back, a hub's next try is at most RECONNECT_MAX_S away,
    # however long the outage was, so the backlog starts within 10 s.
    assert RECONNECT_MAX_S <= 5
    assert max(backoff_delay(a) for a in range(40)) <= RECONNECT_MAX_S
    assert LinkSettings.from_config(cfg()).max_backoff_s == RECONNECT_MAX_S
    policy = Backoff()
    delays = [policy.next() for _ in range(10)]
    assert delays[0] <= 0.5 and max(delays) <= RECONNECT_MAX_S
    policy.reset()
    assert policy.next() <= 0.5  # the broker accepted us: from the floor again


def test_jitter_spreads_a_fleet_reconnecting_together() -> None:
    import random

    rng = random.Random(7)
    delays = {round(backoff_delay(5, 1.0, 60.0, rnd=rng.random), 3) for _ in range(100)}
    assert len(delays) > 90 and min(delays) >= 16 and max(delays) <= 32


def test_settings_from_config_split_credentials_and_tls() -> None:
    s = LinkSettings.from_config(cfg(url="mqtts://u1:p%40ss@broker.example:8884", ca_file="/ca"))
    assert (s.host, s.port, s.tls, s.username) == ("broker.example", 8884, True, "u1")
    assert s.password is not None and s.password.get_secret_value() == "p@ss"
    assert "p@ss" not in repr(s), "the password must not show in a repr or a log line"
    assert s.client_id == "relais-hub-tg-x-1"


@pytest.mark.parametrize(("interval", "keepalive", "expected"), [(60, 60, 91), (10, 60, 60)])
def test_keepalive_stays_above_the_sample_interval(
    interval: int, keepalive: int, expected: int
) -> None:
    s = LinkSettings.from_config(cfg(telemetry_interval_s=interval, keepalive_s=keepalive))
    assert s.keepalive_s == expected


def test_state_payload_and_topics_follow_the_contract() -> None:
    p = state_payload(False, 42, 7, ts=1.0)
    assert p == {
        "online": False, "ts": 1.0, "agent_version": p["agent_version"],
        "config_version": 7, "session": 42,
    }  # fmt: skip
    assert topics.state("h") == "relais/hubs/h/state"
    assert topics.config_desired("h") == "relais/hubs/h/config/desired"
    assert topics.config_reported("h") == "relais/hubs/h/config/reported"
    assert topics.for_kind("h", "event") == "relais/hubs/h/events"
    assert topics.for_kind("h", "health") == "relais/hubs/h/health"


def test_broker_url_parses_credentials_tls_and_hides_the_password() -> None:
    u = BrokerUrl.parse("mqtts://ctl:p%40ss@broker.example")
    assert (u.host, u.port, u.tls, u.username) == ("broker.example", 8883, True, "ctl")
    assert u.password is not None and u.password.get_secret_value() == "p@ss"
    assert str(u) == "mqtts://ctl@broker.example:8883" and "p@ss" not in repr(u)
    plain = BrokerUrl.parse("mqtt://10.0.0.1")
    assert plain.port == 1883 and plain.with_credentials("a", "b").username == "a"
    assert u.with_credentials("a", "b") is u  # the URL's own credentials win
    for bad in ("http://x", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(ValueError):
            BrokerUrl.parse(bad)
