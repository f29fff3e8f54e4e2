"""Which devices changed, for the portal's device cache (``Watch`` requests).

The portal answers every OS probe and splash from device states it keeps, instead of a
round trip to the agent per request. To keep that true, the session service bumps this
feed whenever a device's session changes (login, end, throttle, block, a new config) and
the portal long-polls it (``Watch(since=generation)``) and forgets those devices. The feed
is bumped on the agent's worker thread, inside the transaction that makes the change: any
question the portal asks after hearing of it runs on that same thread after the commit,
so it sees the new state. ``ALL`` means "forget every device" (a new config, the uplink).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterable

ALL = "*"
KEEP = 1024  # changes remembered; a watcher further behind is told to forget everything
POLL_S = 0.05


class ChangeFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0
        self._log: deque[tuple[int, str]] = deque(maxlen=KEEP)

    def bump(self, macs: Iterable[str]) -> None:
        with self._lock:
            for mac in macs:
                self.generation += 1
                self._log.append((self.generation, mac))

    def since(self, generation: int) -> tuple[int, dict[str, int]]:
        """(current generation, {MAC: its latest change} after ``generation``; {ALL: now}
        when the watcher is too far behind to be told precisely)."""
        with self._lock:
            now = self.generation
            if generation >= now:
                return now, {}
            oldest = self._log[0][0] if self._log else now + 1
            if generation < 0 or generation + 1 < oldest:
                return now, {ALL: now}
            changed: dict[str, int] = {}
            for g, m in self._log:
                if g > generation:
                    changed[m] = g
            return now, changed

    async def wait(self, generation: int, timeout_s: float) -> tuple[int, dict[str, int]]:
        """Long poll: return as soon as something changed after ``generation``, or with
        nothing at ``timeout_s`` (the watcher's keepalive). Polls: bumps come from
        another thread, and one watcher (the portal) costs a few µs every POLL_S."""
        deadline = time.monotonic() + timeout_s
        while True:
            now, changed = self.since(generation)
            if changed or time.monotonic() >= deadline:
                return now, changed
            await asyncio.sleep(POLL_S)
