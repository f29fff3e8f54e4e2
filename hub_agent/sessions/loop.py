"""The agent's accounting loop: kernel counters in, session decisions out, applied.

    start(service, kernel)                      # once, before serving the portal
    await run(service, kernel, interval_s, stop) # every interval until ``stop`` is set

``kernel`` is the enforcement Enforcer (anything with the four methods below). Reading the
counters (an ``nft`` subprocess) runs in a worker thread; the database work and applying
the few resulting actions stay on the event loop's thread, which owns the SQLite
connection, so a portal request is never interleaved with a half-done accounting pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from hub_agent.enforce.model import Counters, DesiredState, Grant
from hub_agent.sessions.service import Action, SessionService

log = logging.getLogger(__name__)

OnEvent = Callable[..., None]


class Kernel(Protocol):
    def counters(self) -> Mapping[str, Counters]: ...
    def authorize(self, grant: Grant) -> None: ...
    def deauthorize(self, mac: str) -> None: ...
    def reconcile(self, state: DesiredState) -> object: ...


def _quiet(*_: object, **__: object) -> None:
    return None


def start(service: SessionService, kernel: Kernel, now: float | None = None) -> list[str]:
    """Make the kernel equal to the stored sessions after an agent start.

    Devices with a live session that the kernel no longer holds (a reboot, a flushed
    table) get fresh counters and the quota that is left *now*; devices the kernel kept
    (the agent alone restarted) keep their counters. Returns the MACs re-created."""
    held = kernel.counters()
    lost = [g.mac for g in service.grants(now).grants if not g.staff and g.mac not in held]
    if lost:
        service.note_kernel_reset(lost, now)
        log.info("kernel lost %d device(s): re-granting from stored usage", len(lost))
    kernel.reconcile(service.grants(now))
    return lost


def apply(actions: Iterable[Action], kernel: Kernel, on_event: OnEvent = _quiet) -> int:
    """Apply actions one by one; a failing one is logged and does not stop the rest.
    Returns how many failed (the next reconcile repairs them)."""
    failed = 0
    for a in actions:
        try:
            if a.kind == "deauthorize":
                kernel.deauthorize(a.mac)
                on_event("device_deauthorised", mac=a.mac, reason=a.reason)
            elif a.grant is not None:
                kernel.authorize(a.grant)
                if a.kind == "throttle":
                    on_event("device_throttled", mac=a.mac)
        except (OSError, ValueError, RuntimeError) as e:
            failed += 1
            log.warning("enforcement %s for %s failed: %s", a.kind, a.mac, e)
    return failed


def tick(
    service: SessionService,
    kernel: Kernel,
    counters: Mapping[str, Counters] | None = None,
    now: float | None = None,
    on_event: OnEvent = _quiet,
) -> list[Action]:
    """One pass: fold the counters (read now if not given), decide, apply."""
    actions = service.account(kernel.counters() if counters is None else counters, now)
    apply(actions, kernel, on_event)
    return actions


async def run(
    service: SessionService,
    kernel: Kernel,
    interval_s: float,
    stop: asyncio.Event,
    on_event: OnEvent = _quiet,
    on_pass: Callable[[float], None] | None = None,
) -> None:
    """Account every ``interval_s`` until ``stop`` is set; ``on_pass(seconds)`` for health."""
    while not stop.is_set():
        began = time.monotonic()
        try:
            counters = await asyncio.to_thread(kernel.counters)
            tick(service, kernel, counters, on_event=on_event)
        except (OSError, RuntimeError) as e:  # nft failed: try again next interval
            log.warning("accounting pass failed: %s", e)
        if on_pass is not None:
            on_pass(time.monotonic() - began)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
