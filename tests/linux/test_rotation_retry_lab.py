"""A hub left on its previous broker user moves to the new one by itself (issue 17).

`hubctl rotate` while the broker does not know the new password: the hub stays on the
previous user. The password is then handed to the broker and it is reloaded, and nothing
else: no push, no restart. The agent's link tries the new user again on its backoff
(shortened here through ``RELAIS_MQTT_RETRY_NEW_S``) and moves to it; no seq is lost.
A running controller (the lease holder) then retires the previous user by itself: it can
no longer connect.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from hub_agent.mqtt.core import ConnectFailed
from hub_agent.mqtt.fallback import RETRY_NEW_ENV
from lab.centre import BIN, process_env, wait_for
from provisioning.statedir import StateDir
from tests.conftest import require_lab, require_mosquitto
from tests.linux.test_rotation_lab import HUB, RotLab, _live_mqtt

pytestmark = pytest.mark.root


def reload_broker(rl: RotLab) -> None:
    """What the rotation's reload would have done: the centre's files to the broker, HUP."""
    rl.settings(reload=True)
    doc = yaml.safe_load((rl.central / "central.yaml").read_text())
    subprocess.run(doc["broker_reload"], check=True, capture_output=True)


@contextlib.contextmanager
def controller(rl: RotLab) -> Iterator[subprocess.Popen[bytes]]:
    """`hubctl controller run` on the centre's state folder (the only one: it leads)."""
    log = open(rl.root / "controller.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(
        [str(BIN / "hubctl"), "--state", str(rl.central), "controller", "run", "--http-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, env=process_env(), start_new_session=True,
    )  # fmt: skip
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        log.close()


def test_a_hub_on_the_previous_user_moves_to_the_new_one_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_lab()
    require_mosquitto()
    monkeypatch.setenv(RETRY_NEW_ENV, "2")  # the agent's first retry after 1-2 s
    with RotLab.running() as rl, contextlib.ExitStack() as stack:
        seen, watch, agent = rl.start_watched()

        rl.settings(reload=False)
        r = rl.hubctl("rotate", HUB, "--timeout", "90", check=False)
        assert r.returncode == 1, r.stdout + r.stderr

        def logs() -> str:
            return rl.log("agent.log") + rl.log("broker.log")

        previous = {"user": HUB, "credential": "previous"}
        wait_for("status: on the previous user", lambda: _live_mqtt(rl) == previous, 30, logs)
        n = max(seen.seqs)
        wait_for("samples on the previous user", lambda: max(seen.seqs) > n + 3, 60, logs)
        assert "still refused" in rl.log("agent.log"), "the new user was never tried again"

        old_password = (StateDir(rl.central).read_secret(HUB) or {})["previous"]["password"]
        ctl = stack.enter_context(controller(rl))

        def ctl_log() -> str:
            return logs() + (rl.root / "controller.log").read_text(errors="replace")[-4000:]

        reload_broker(rl)  # the broker learns the new password; the hub is told nothing
        new = {"user": f"{HUB}.alt", "credential": "new"}
        wait_for("status: on the new user", lambda: _live_mqtt(rl) == new, 180, logs)
        wait_for("the centre sees the new user", lambda: seen.state.get("user") == new["user"], 30)
        assert seen.state.get("credential") == "new" and seen.state.get("online") is True
        n = max(seen.seqs)
        wait_for("samples on the new user", lambda: max(seen.seqs) > n + 3, 60, logs)
        assert agent.poll() is None and rl.procs["agent"].pid == agent.pid
        wait_for("every seq from 1 at the centre", seen.complete, 30)

        # The controller retired the previous user by itself: gone from the secret and
        # from the broker (which it reloaded).
        def retired() -> bool:
            return "previous" not in (StateDir(rl.central).read_secret(HUB) or {})

        wait_for("the controller retires the old user", retired, 60, ctl_log)
        with pytest.raises(ConnectFailed, match="refused"):
            rl.mqtt(HUB, old_password).close()
        assert ctl.poll() is None
        watch.close()
