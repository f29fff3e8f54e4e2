"""The hub config model: the example is valid; bad documents are refused with a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.config import (
    ConfigError,
    HubConfig,
    load_config,
    normalise_mac,
    validate_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"


def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def test_example_config_is_valid_and_complete() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert cfg.hub.kind == "mairie"
    assert cfg.network.lan.interface == "lan0"
    assert str(cfg.network.lan.address) == "10.42.0.1/24"
    assert cfg.network.wan.interface == "wan0"
    assert cfg.staff_share_pct == 40
    assert {p.id for p in cfg.plans} == {"heure", "jour"}
    assert "service-public.gouv.tg" in cfg.zero_rated.domains
    # every top-level section of the model is spelled out in the example
    assert set(example()) == set(HubConfig.model_fields)


def _refused(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    return e.value.problems


def test_unknown_key_is_refused_with_its_path() -> None:
    data = example()
    data["portal"]["colour"] = "blue"
    assert [p for p, _ in _refused(data)] == ["portal.colour"]


def test_bad_rate_is_refused_with_its_path() -> None:
    data = example()
    data["plans"][1]["down_kbit"] = -5
    paths = [p for p, _ in _refused(data)]
    assert paths == ["plans.1.down_kbit"]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["staff"]["devices"].append({"mac": "zz:00"}), "staff.devices.1.mac"),
        (lambda d: d["network"]["lan"].update(address="10.42.0.300/24"), "network.lan.address"),
        (lambda d: d["hub"].update(kind="hospital"), "hub.kind"),
        (lambda d: d["mqtt"].update(url="http://x"), "mqtt.url"),
        (lambda d: d["content"].update(sync_window="late"), "content.sync_window"),
        (lambda d: d.update(version=0), "version"),
        (lambda d: d["walled_garden"]["domains"].append("not a domain"), "walled_garden.domains"),
    ],
)
def test_bad_values_name_the_field(mutate: Any, path: str) -> None:
    data = example()
    mutate(data)
    problems = _refused(data)
    assert any(p.startswith(path) for p, _ in problems), problems


def test_error_message_names_field_and_source(tmp_path: Path) -> None:
    bad = tmp_path / "hub.yaml"
    data = example()
    data["plans"][0]["up_kbit"] = "fast"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_config(bad, env={})
    assert "plans.0.up_kbit" in str(e.value)
    assert str(bad) in str(e.value)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "hub.yaml"
    bad.write_text("version: 1\nhub: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad, env={})
    assert "line" in e.value.problems[0][0]


def test_env_overrides_data_dir_and_mqtt_with_credentials_kept_secret() -> None:
    cfg = load_config(
        EXAMPLE,
        env={
            "RELAIS_DATA_DIR": "/tmp/relais-x",
            "RELAIS_MQTT_URL": "mqtts://hub:s3cret@broker:8883",
        },
    )
    assert str(cfg.data_dir) == "/tmp/relais-x"
    assert cfg.mqtt.url == "mqtts://broker:8883"
    assert cfg.mqtt.username == "hub"
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "s3cret"
    assert cfg.mqtt.tls and cfg.mqtt.port == 8883
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.model_dump())
    assert cfg.to_wire()["mqtt"]["password"] == "s3cret"


def test_wire_form_round_trips() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert validate_config(cfg.to_wire()) == cfg


def test_cross_checks() -> None:
    data = example()
    data["plans"].append(dict(data["plans"][0]))
    assert any("duplicate plan" in m for _, m in _refused(data))
    data = example()
    data["free_tier"]["enabled"] = False
    assert any("free login" in m for _, m in _refused(data))


def test_kind_default_staff_share() -> None:
    data = example()
    data["hub"]["kind"] = "clinic"
    assert validate_config(data).staff_share_pct == 50
    data["hub"]["kind"] = "school"
    assert validate_config(data).staff_share_pct == 30


@pytest.mark.parametrize("bad", ["", "00:11:22:33:44", "01:00:5e:00:00:01", "gg:11:22:33:44:55"])
def test_normalise_mac_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_mac(bad)


def test_normalise_mac_accepts_dashes_and_case() -> None:
    assert normalise_mac("02-AB-cd-00-11-22") == "02:ab:cd:00:11:22"
