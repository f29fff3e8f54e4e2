"""The portal's device cache (issue 16): captive phones' probes and splash pages are
answered from what the portal holds, kept true by the agent's change feed, not by a
round trip per request; a busy agent leaves a device's last answer standing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from captive_portal.agent import FRESH_CAPTIVE_S, STALE_S, Agent
from hub_agent.api.protocol import Disconnect, Login
from tests.unit.real_agent import DEV1, DEV2, MAC1, Hub, running_hub


async def _until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _whoamis(hub: Hub) -> int:
    return hub.agent.calls.count("whoami")


async def _scenario(hub: Hub) -> None:
    agent = Agent(hub.config.portal.agent_socket, timeout_s=2.0)
    watch = asyncio.create_task(agent.watch())
    try:
        await _until(lambda: agent.synced)
        code = await asyncio.to_thread(hub.agent.issue, "heure")
        before = _whoamis(hub)
        # a captive phone's probes and splash, again and again, at once: one agent question
        states = await asyncio.gather(*(agent.whoami(DEV1, FRESH_CAPTIVE_S) for _ in range(50)))
        await agent.whoami(DEV1, FRESH_CAPTIVE_S)
        assert not any(s.authorised for s in states)
        assert _whoamis(hub) - before == 1
        # the agent lets the device in (a login the portal did not see: a mobile-money
        # grant, say): the feed says so, the next answer is the new one
        resp = await asyncio.to_thread(hub.agent.ask, Login(ip=DEV1, method="voucher", code=code))
        assert resp.ok
        await _until(lambda: agent.devices.get(DEV1, 60) is None)
        assert (await agent.whoami(DEV1, FRESH_CAPTIVE_S)).authorised
        # and ends it on its own (the caretaker): the probe sees it at once
        await asyncio.to_thread(hub.agent.ask, Disconnect(mac=MAC1))
        await _until(lambda: agent.devices.get(DEV1, 60) is None)
        assert not (await agent.whoami(DEV1, FRESH_CAPTIVE_S)).authorised
        # another device's change leaves this one's answer cached
        cached = _whoamis(hub)
        await agent.whoami(DEV2, FRESH_CAPTIVE_S)
        await agent.whoami(DEV1, FRESH_CAPTIVE_S)
        assert _whoamis(hub) - cached == 1
    finally:
        watch.cancel()


def test_probes_are_answered_from_the_cache_kept_true_by_the_feed(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        asyncio.run(_scenario(hub))


async def _busy(hub: Hub) -> None:
    agent = Agent(hub.config.portal.agent_socket, timeout_s=0.3)
    watch = asyncio.create_task(agent.watch())
    try:
        await _until(lambda: agent.synced)
        code = await asyncio.to_thread(hub.agent.issue, "heure")
        await asyncio.to_thread(hub.agent.ask, Login(ip=DEV1, method="voucher", code=code))
        assert (await agent.whoami(DEV1)).authorised
        # the agent's worker is stuck behind a slow kernel change (a crowd on a small box),
        # and that change is announced for this very device
        release = hub.agent.kernel.hold()
        stuck = threading.Thread(
            target=hub.agent.ask, args=(Login(ip=DEV1, method="voucher", code=code),)
        )
        stuck.start()
        await _until(lambda: agent.devices.get(DEV1, 60) is None)  # no longer current
        state = await agent.whoami(DEV1)
        assert state.authorised and state.stale  # its probes keep saying "online"
        assert not (await agent.whoami(DEV2)).available  # never answered: fail closed
        release.set()
        await asyncio.to_thread(stuck.join, 10)
        fresh = await agent.whoami(DEV1)
        assert fresh.authorised and not fresh.stale
    finally:
        watch.cancel()


def test_a_busy_agent_leaves_the_last_answer_standing(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        asyncio.run(_busy(hub))


def test_an_aged_answer_still_true_is_given_at_once_and_asked_again_behind(
    tmp_path: Path,
) -> None:
    async def scenario(hub: Hub) -> None:
        now = [1000.0]
        agent = Agent(hub.config.portal.agent_socket, timeout_s=2.0)
        agent.devices.clock = lambda: now[0]
        watch = asyncio.create_task(agent.watch())
        try:
            await _until(lambda: agent.synced)
            first = await agent.captive(DEV1)
            asked = _whoamis(hub)
            now[0] += FRESH_CAPTIVE_S + 1  # older than fresh; the feed says nothing changed
            assert await agent.captive(DEV1) is first  # no wait on the agent
            await _until(lambda: _whoamis(hub) == asked + 1)  # asked behind it
            await _until(lambda: agent.devices.get(DEV1, 1) is not None)  # and replaced
            # a change the feed reports is waited for: the probe says "through" at once
            code = await asyncio.to_thread(hub.agent.issue, "heure")
            resp = await asyncio.to_thread(
                hub.agent.ask, Login(ip=DEV1, method="voucher", code=code)
            )
            assert resp.ok
            await _until(lambda: agent.devices.get(DEV1, 60) is None)
            assert (await agent.captive(DEV1)).authorised
            now[0] += STALE_S + 1  # too old to give even while asking: waited for
            asked = _whoamis(hub)
            assert (await agent.captive(DEV1)).authorised and _whoamis(hub) == asked + 1
        finally:
            watch.cancel()

    with running_hub(tmp_path) as hub:
        asyncio.run(scenario(hub))
