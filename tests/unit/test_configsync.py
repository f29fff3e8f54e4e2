"""Config sync without a broker: the decision, apply/rollback, storage and restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.config import HubConfig, validate_config
from hub_agent.configsync import ConfigStore, ConfigSync, decide, load_active_config
from hub_agent.signing import SigningKey, sign_envelope

KEY = SigningKey.generate()
OTHER = SigningKey.generate()


def doc(version: int, tmp: Path, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "version": version,
        "hub": {"id": "hub-a", "kind": "clinic", "name": "Clinique"},
        "data_dir": str(tmp / "data"),
        "portal": {"login_methods": ["free"]},
        "trust": {"central_public_key": KEY.public_b64},
    }
    d.update(extra)
    return d


def signed(version: int, tmp: Path, key: SigningKey = KEY, **extra: Any) -> bytes:
    return json.dumps(sign_envelope(key, "hub-a", version, doc(version, tmp, **extra))).encode()


def decide_for(payload: bytes, applied: int = 1, sig: str | None = None) -> Any:
    return decide(
        payload, hub_id="hub-a", public_key=KEY.public_b64, applied_version=applied, applied_sig=sig
    )


def test_a_valid_signed_newer_config_is_accepted(tmp_path: Path) -> None:
    d = decide_for(signed(2, tmp_path))
    assert d.action == "apply" and d.config is not None and d.config.version == 2


@pytest.mark.parametrize(
    ("payload_fn", "reason"),
    [
        (lambda t: b"{not json", "envelope: not JSON"),
        (
            lambda t: json.dumps({"version": 2, "config": doc(2, t)}).encode(),
            "signature: envelope is not signed",
        ),
        (lambda t: signed(2, t, key=OTHER), "signature: signed by an unknown key"),
        (lambda t: signed(1, t), "version: 1 is not above the applied 1"),
        (
            lambda t: signed(2, t, free_tier={"daily_mb": -5}),
            "free_tier.daily_mb",
        ),
        (lambda t: signed(2, t, surprise=1), "surprise"),
    ],
)
def test_bad_configs_are_rejected_with_a_reason_naming_the_problem(
    tmp_path: Path, payload_fn: Any, reason: str
) -> None:
    d = decide_for(payload_fn(tmp_path))
    assert d.action == "reject"
    assert reason in (d.reason or ""), d.reason


def test_a_config_for_another_hub_inside_a_valid_envelope_is_rejected(tmp_path: Path) -> None:
    other = doc(2, tmp_path)
    other["hub"] = {**other["hub"], "id": "hub-z"}
    payload = json.dumps(sign_envelope(KEY, "hub-a", 2, other)).encode()
    d = decide_for(payload)
    assert d.action == "reject" and "hub.id" in (d.reason or "")


def test_the_applied_envelope_delivered_again_is_ignored(tmp_path: Path) -> None:
    payload = signed(3, tmp_path)
    sig = json.loads(payload)["sig"]
    assert decide_for(payload, applied=3, sig=sig).action == "ignore"
    assert decide_for(signed(3, tmp_path), applied=3, sig="other").action == "reject"


def test_without_a_trusted_key_nothing_is_applied(tmp_path: Path) -> None:
    d = decide(
        signed(2, tmp_path), hub_id="hub-a", public_key=None, applied_version=1, applied_sig=None
    )
    assert d.action == "reject" and "central_public_key" in (d.reason or "")


class Box:
    """Stands for the hub's appliers: records what was applied; can be told to fail."""

    def __init__(self) -> None:
        self.applied: list[int] = []
        self.fail_on: int | None = None
        self.healthy = True

    def apply(self, cfg: HubConfig) -> None:
        if cfg.version == self.fail_on:
            raise RuntimeError(f"nft refused v{cfg.version}")
        self.applied.append(cfg.version)

    def check(self) -> bool:
        return self.healthy


def start(tmp_path: Path) -> tuple[ConfigSync, Box]:
    box = Box()
    current = validate_config(doc(1, tmp_path))
    return ConfigSync(current, apply=box.apply, health_check=box.check), box


def test_apply_success_stores_active_and_previous(tmp_path: Path) -> None:
    sync, box = start(tmp_path)
    r1 = asyncio.run(sync.handle(signed(2, tmp_path)))
    r2 = asyncio.run(sync.handle(signed(3, tmp_path)))
    assert r1 is not None and r1.status == "applied" and r1.reason is None
    assert r2 is not None and r2.status == "applied"
    assert box.applied == [2, 3] and sync.current.version == 3
    store = ConfigStore(tmp_path / "data")
    assert (store.active() or {})["version"] == 3 and (store.previous() or {})["version"] == 2
    assert (store.last_result() or {})["status"] == "applied"
    assert (tmp_path / "data/config/active.json").stat().st_mode & 0o077 == 0


def test_a_failing_apply_is_rolled_back_and_reported(tmp_path: Path) -> None:
    sync, box = start(tmp_path)
    box.fail_on = 2
    r = asyncio.run(sync.handle(signed(2, tmp_path)))
    assert r is not None and r.status == "rolled_back" and "nft refused v2" in (r.reason or "")
    assert box.applied == [1], "the previous config must be applied again"
    assert sync.current.version == 1 and ConfigStore(tmp_path / "data").active() is None


def test_a_failing_health_check_is_rolled_back(tmp_path: Path) -> None:
    sync, box = start(tmp_path)
    box.healthy = False
    r = asyncio.run(sync.handle(signed(2, tmp_path)))
    assert r is not None and r.status == "rolled_back" and "health check" in (r.reason or "")
    assert box.applied == [2, 1] and sync.current.version == 1


def test_a_rolled_back_envelope_delivered_again_is_not_retried(tmp_path: Path) -> None:
    # The retained copy comes back with every reconnect; retrying it each time would loop
    # (a broker that refuses the hub makes the link reconnect, which delivers it again).
    sync, box = start(tmp_path)
    box.healthy = False
    payload = signed(2, tmp_path)
    assert (r := asyncio.run(sync.handle(payload))) is not None and r.status == "rolled_back"
    assert asyncio.run(sync.handle(payload)) is None
    assert box.applied == [2, 1]
    box.healthy = True  # the centre fixes the cause and pushes a new version
    assert (r := asyncio.run(sync.handle(signed(3, tmp_path)))) is not None
    assert r.status == "applied" and box.applied == [2, 1, 3]


def test_a_rejected_config_leaves_the_running_one(tmp_path: Path) -> None:
    sync, box = start(tmp_path)
    r = asyncio.run(sync.handle(signed(2, tmp_path, key=OTHER)))
    assert r is not None and r.status == "rejected" and box.applied == []
    assert sync.current.version == 1


def test_restart_resumes_with_the_last_applied_config(tmp_path: Path) -> None:
    sync, _ = start(tmp_path)
    payload = signed(4, tmp_path)
    asyncio.run(sync.handle(payload))
    fallback = tmp_path / "hub.yaml"
    fallback.write_text(yaml.safe_dump(doc(1, tmp_path)))
    cfg = load_active_config(tmp_path / "data", fallback, env={})
    assert cfg.version == 4
    # The retained envelope delivered again after the restart is not applied twice.
    box = Box()
    again = ConfigSync(cfg, apply=box.apply)
    assert asyncio.run(again.handle(payload)) is None and box.applied == []


def test_without_stored_config_or_with_a_newer_file_the_file_wins(tmp_path: Path) -> None:
    fallback = tmp_path / "hub.yaml"
    fallback.write_text(yaml.safe_dump(doc(5, tmp_path)))
    assert load_active_config(tmp_path / "data", fallback, env={}).version == 5
    sync, _ = start(tmp_path)
    asyncio.run(sync.handle(signed(2, tmp_path)))
    assert load_active_config(tmp_path / "data", fallback, env={}).version == 5
