"""`hubctl rotate HUB`: a new broker password for a running hub, without a restart.

1. ``enroll.rotate``: the new password in the hub's other broker user, the broker reloaded;
   the old user stays.
2. A push of the hub's current config with the new credentials (the old user as
   ``mqtt.fallback``): the agent moves its link to the new user, or back to the old one
   when the broker refuses it.
3. The hub's retained ``state`` names the user it is connected as: once it is the new one
   (``credential: "new"``), the old user is retired (``enroll.retire``). Otherwise the
   old user is kept and the command exits 1; the hub tries the new user again by itself
   (``hub_agent.mqtt.fallback``) and a running controller retires the old user once it
   has (``controller.retirement``); ``hubctl rotate HUB --retire`` also finishes it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hub_agent.mqtt.client import Client
from hub_agent.mqtt.core import MqttError
from provisioning import registry, topics
from provisioning.credentials import Credentials, adopted, from_secret
from provisioning.enroll import EnrollError, retire, rotate
from provisioning.pushplan import PushFile

if TYPE_CHECKING:
    from provisioning.cli import Ctx

RunPush = Callable[["Ctx", PushFile, str | None, str | None, str], int]


class StateWatch:
    """The latest retained/live ``state`` of one hub (paho's thread writes, we wait)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}
        self.changed = threading.Condition()

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if isinstance(msg, dict):
            with self.changed:
                self.latest = msg
                self.changed.notify_all()

    def wait(self, done: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not done(self.latest) and (left := deadline - time.monotonic()) > 0:
                self.changed.wait(min(left, 0.5))
            return self.latest


def settled(creds: Credentials, version: int) -> Callable[[dict[str, Any]], bool]:
    """The hub's answer: on the new user, or online on the config with the new user and
    still on the previous one (the broker refused the new user)."""

    def check(state: dict[str, Any]) -> bool:
        if adopted(creds, state):
            return True
        on_version = (
            isinstance(state.get("config_version"), int) and state["config_version"] >= version
        )
        return bool(state.get("online")) and on_version and state.get("credential") == "previous"

    return check


def cmd_rotate(ctx: Ctx, run_push: RunPush) -> int:
    a = ctx.args
    hub_id: str = a.hub_id
    if not a.retire:
        try:
            creds = rotate(ctx.state, ctx.db, hub_id)
        except EnrollError as e:
            print(f"hubctl: rotate {hub_id}: {e}", file=sys.stderr)
            return 2
        kept = creds.previous[0] if creds.previous else "-"
        print(f"{hub_id}: new broker user {creds.username}; {kept} kept until the hub uses it")
        if run_push(ctx, PushFile(), hub_id, None, f"hubctl rotate {hub_id}") != 0:
            print(f"{hub_id}: the config did not apply; {kept} kept", file=sys.stderr)
            return 1
    creds_now = from_secret(hub_id, ctx.state.read_secret(hub_id))
    if creds_now is None or creds_now.previous is None:
        print(f"{hub_id}: no rotation pending")
        return 0
    row = registry.get_hub(ctx.db, hub_id) or {}
    watch = StateWatch()
    client = Client(ctx.broker_url(), on_message=watch.on_message)
    try:
        client.connect()
        client.subscribe([topics.topic(hub_id, "state")])
        state = watch.wait(settled(creds_now, int(row.get("desired_version") or 0)), a.timeout)
    except MqttError as e:
        print(f"hubctl: rotate {hub_id}: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if not adopted(creds_now, state):
        user, cred = state.get("user", "?"), state.get("credential", "?")
        print(
            f"{hub_id}: connected as {user} ({cred} credential), not {creds_now.username}: "
            f"{creds_now.previous[0]} kept; run `hubctl rotate {hub_id} --retire` once it is",
            file=sys.stderr,
        )
        return 1
    old = retire(ctx.state, hub_id)
    if old is None:  # a running controller (controller.retirement) got there first
        old = f"{creds_now.previous[0]} already"
    print(f"{hub_id}: connected as {creds_now.username}; previous broker user {old} retired")
    return 0
