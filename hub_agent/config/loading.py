"""Reading a hub config: parse YAML, apply the environment's overrides, validate, and name
each refused field by its path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hub_agent.config.base import ConfigError
from hub_agent.config.document import HubConfig


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def validate_config(data: Any, source: str = "config") -> HubConfig:
    """Validate a parsed document; raise ConfigError naming each bad field's path."""
    if not isinstance(data, Mapping):
        raise ConfigError([("(document)", "expected a mapping at the top level")], source)
    try:
        return HubConfig.model_validate(data)
    except ValidationError as e:
        problems = [(_path(err["loc"]), err["msg"]) for err in e.errors()]
        raise ConfigError(problems, source) from None


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """RELAIS_DATA_DIR and RELAIS_MQTT_URL override the document for any command."""
    data = dict(data)
    if env.get("RELAIS_DATA_DIR"):
        data["data_dir"] = env["RELAIS_DATA_DIR"]
    if env.get("RELAIS_MQTT_URL"):
        mqtt = dict(data.get("mqtt") or {})
        mqtt.pop("username", None)
        mqtt.pop("password", None)
        mqtt["url"] = env["RELAIS_MQTT_URL"]
        data["mqtt"] = mqtt
    return data


def parse_yaml(text: str, source: str = "config") -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(document)"
        raise ConfigError([(where, f"invalid YAML: {getattr(e, 'problem', e)}")], source) from None


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> HubConfig:
    """Read, override from the environment, and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([("(file)", f"cannot read {p}: {e.strerror}")], str(p)) from None
    data = parse_yaml(text, str(p))
    if not isinstance(data, Mapping):
        raise ConfigError([("(document)", "expected a mapping at the top level")], str(p))
    data = apply_env_overrides(dict(data), os.environ if env is None else env)
    return validate_config(data, str(p))
