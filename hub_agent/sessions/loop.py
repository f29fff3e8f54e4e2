"""The agent's accounting pass: kernel counters in, session decisions out, applied.

    start(service, kernel)   # once, before serving the portal: the kernel as stored
    tick(service, kernel)    # every pass (the daemon's ``account_once``, on its worker)

``kernel`` is the enforcement Enforcer (anything with the four methods below). The daemon
runs both on its one worker thread, which owns the SQLite connection and the kernel
handles, so a portal request is never interleaved with a half-done pass.
"""

from __future__ import annotations

import logging
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
