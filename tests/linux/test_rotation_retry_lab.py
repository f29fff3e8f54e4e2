"""A hub left on its previous broker user moves to the new one by itself (issue 17).

`hubctl rotate` while the broker does not know the new password: the hub stays on the
previous user. The password is then handed to the broker and it is reloaded, and nothing
else: no push, no restart. The agent's link tries the new user again on its backoff
(shortened here through ``RELAIS_MQTT_RETRY_NEW_S``) and moves to it; no seq is lost.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from hub_agent.mqtt.fallback import RETRY_NEW_ENV
from provisioning.statedir import StateDir
from tests.conftest import require_lab, require_mosquitto
from tests.linux.test_rotation_lab import HUB, RotLab, Seen, _live_mqtt, wait_for

pytestmark = pytest.mark.root


def reload_broker(rl: RotLab) -> None:
    """What the rotation's reload would have done: the centre's files to the broker, HUP."""
    rl.settings(reload=True)
    doc = yaml.safe_load((rl.central / "central.yaml").read_text())
    subprocess.run(doc["broker_reload"], check=True, capture_output=True)


def test_a_hub_on_the_previous_user_moves_to_the_new_one_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_lab()
    require_mosquitto()
    monkeypatch.setenv(RETRY_NEW_ENV, "2")  # the agent's first retry after 1-2 s
    with RotLab.running() as rl:
        ctl_user, ctl_password = StateDir(rl.central).controller_credentials()
        seen = Seen()
        watch = rl.client(ctl_user, ctl_password, on_message=seen.on_message)
        watch.subscribe([f"relais/hubs/{HUB}/health", f"relais/hubs/{HUB}/state"])
        agent = rl.start_agent()
        wait_for("first samples", lambda: len(seen.seqs) >= 3, 60)
        local = rl.root / "local.yaml"
        local.write_text(yaml.safe_dump(rl.local()))
        rl.hubctl("push", HUB, str(local), "--timeout", "90")

        rl.settings(reload=False)
        r = rl.hubctl("rotate", HUB, "--timeout", "90", check=False)
        assert r.returncode == 1, r.stdout + r.stderr
        logs = lambda: rl.log("agent.log") + rl.log("broker.log")  # noqa: E731
        previous = {"user": HUB, "credential": "previous"}
        wait_for("status: on the previous user", lambda: _live_mqtt(rl) == previous, 30, logs)
        n = max(seen.seqs)
        wait_for("samples on the previous user", lambda: max(seen.seqs) > n + 3, 60, logs)
        assert "still refused" in rl.log("agent.log"), "the new user was never tried again"

        reload_broker(rl)  # the broker learns the new password; the hub is told nothing
        new = {"user": f"{HUB}.alt", "credential": "new"}
        wait_for("status: on the new user", lambda: _live_mqtt(rl) == new, 180, logs)
        wait_for("the centre sees the new user", lambda: seen.state.get("user") == new["user"])
        assert seen.state.get("credential") == "new" and seen.state.get("online") is True
        n = max(seen.seqs)
        wait_for("samples on the new user", lambda: max(seen.seqs) > n + 3, 60, logs)
        assert agent.poll() is None and rl.procs["agent"].pid == agent.pid
        wait_for("every seq from 1 at the centre", seen.complete, 30)
        watch.close()
