"""The config's radius section: optional, validated with field paths, its secrets carried by
to_wire (pushes) but not given to the portal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.config import ConfigError, validate_config
from hub_agent.portal_view import portal_view

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"


def _data(radius: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    data["radius"] = radius
    return data


def test_the_example_runs_without_radius() -> None:
    assert validate_config(yaml.safe_load(EXAMPLE.read_text())).radius is None


def test_bad_values_name_their_path() -> None:
    with pytest.raises(ConfigError) as e:
        validate_config(
            _data(
                {
                    "primary": {"address": "aaa.example", "secret": "long-enough"},
                    "secondary": {"address": "192.0.2.2", "secret": "short", "retries": -1},
                    "coa_port": 0,
                    "colour": "blue",
                }
            )
        )
    paths = {p for p, _ in e.value.problems}
    assert paths == {
        "radius.primary.address",
        "radius.secondary.secret",
        "radius.secondary.retries",
        "radius.coa_port",
        "radius.colour",
    }


def test_secrets_travel_in_pushes_not_to_the_portal() -> None:
    config = validate_config(
        _data(
            {
                "primary": {"address": "192.0.2.1", "secret": "primary-secret"},
                "secondary": {"address": "2001:db8::2", "secret": "secondary-secret"},
            }
        )
    )
    wire = config.to_wire()
    assert wire["radius"]["primary"]["secret"] == "primary-secret"
    assert wire["radius"]["secondary"]["secret"] == "secondary-secret"
    assert validate_config(wire) == config  # a pushed config arrives whole
    view = portal_view(config)
    assert "primary-secret" not in str(view) and "secondary-secret" not in str(view)
    assert validate_config(view).radius is not None  # the portal still validates its copy


def test_the_commented_example_section_is_valid() -> None:
    text = EXAMPLE.read_text()
    block = text[text.index("# radius:") :]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config = validate_config({**yaml.safe_load(text), **yaml.safe_load(uncommented)})
    assert config.radius is not None and config.radius.secondary is not None
