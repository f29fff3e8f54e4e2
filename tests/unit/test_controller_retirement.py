"""The controller retires a rotated hub's previous broker user: the decision (pure), and
one pass on a real state folder and registry (password file by mosquitto_passwd)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hub_agent.mqtt.core import BrokerUrl
from provisioning import registry
from provisioning.controller.retirement import Retirer, candidate, should_retire
from provisioning.credentials import Credentials, from_secret
from provisioning.enroll import enroll, rotate
from provisioning.statedir import StateDir
from provisioning.storage import DbUrl

PENDING = Credentials("hub-a.alt", "p2", ("hub-a", "p1"))


def state(
    user: str = "hub-a.alt", credential: str = "new", version: object = 3
) -> dict[str, object]:
    return {"online": True, "user": user, "credential": credential, "config_version": version}


def test_retire_only_a_pending_rotation_the_hub_adopted_on_the_latest_config() -> None:
    assert should_retire(PENDING, state(), desired=3)
    assert should_retire(PENDING, state(version=4), desired=3)
    assert not should_retire(PENDING, state(version=2), desired=3)  # an older config
    assert not should_retire(PENDING, state(version=True), desired=0)
    assert not should_retire(PENDING, state(version=None), desired=0)
    assert not should_retire(PENDING, state("hub-a", "previous"), desired=3)
    assert not should_retire(PENDING, state("hub-a"), desired=3)  # new, but before the rotation
    assert not should_retire(PENDING, {**state(), "online": False}, desired=3)
    assert not should_retire(PENDING.retired(), state(), desired=3)  # nothing pending
    assert not should_retire(None, state(), desired=3)


def test_only_online_states_on_a_new_credential_are_candidates() -> None:
    assert candidate(state())
    assert not candidate(state(credential="previous"))
    assert not candidate({**state(), "online": False})
    assert not candidate(["not", "a", "state"])


def test_one_pass_retires_once_and_only_while_leading(tmp_path: Path) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (make test installs mosquitto)")
    sd = StateDir(tmp_path / "central")
    db = registry.open_registry(sd.registry_path)
    enroll(sd, db, registry.HubRecord("hub-a", "mairie", "A"), mqtt_url="mqtt://127.0.0.1:1")
    creds = rotate(sd, db, "hub-a")
    assert creds.previous is not None and creds.previous[0] == "hub-a"
    desired = int((registry.get_hub(db, "hub-a") or {})["desired_version"])
    leading = False
    r = Retirer(sd, DbUrl.parse(str(sd.registry_path)), BrokerUrl("127.0.0.1", 1), lambda: leading)
    topic = "relais/hubs/hub-a/state"

    def users() -> set[str]:
        return {line.split(":")[0] for line in sd.passwd_path.read_text().splitlines()}

    r.on_message(topic, json.dumps(state("hub-a.alt", "new", desired)).encode(), True)
    assert r.run_once(db) == 0  # not the lease holder: another controller's job
    assert (from_secret("hub-a", sd.read_secret("hub-a")) or PENDING).previous is not None

    leading = True
    r.on_message(topic, json.dumps(state("hub-a", "previous", desired)).encode(), False)
    assert r.run_once(db) == 0  # the newest state says previous: nothing to do
    assert "hub-a" in users()

    r.on_message(topic, json.dumps(state("hub-a.alt", "new", desired)).encode(), False)
    assert r.run_once(db) == 1
    assert r.retired == [("hub-a", "hub-a")]
    assert (from_secret("hub-a", sd.read_secret("hub-a")) or PENDING).previous is None
    assert "hub-a" not in users() and "hub-a.alt" in users()

    r.on_message(topic, json.dumps(state("hub-a.alt", "new", desired)).encode(), True)
    assert r.run_once(db) == 0  # again (a retained copy, another controller): no-op
    db.close()
