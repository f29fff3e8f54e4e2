"""Failed-attempt lockout per key (a device's IP): N failures in a window, then wait.

Pure over an injected clock so the decision is unit-tested without sleeping; memory is
bounded (a /24 LAN has few devices, but a flood of spoofed keys must not grow it forever).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Lockout:
    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 4096
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, key: str) -> int:
        """0 when ``key`` may try now, else whole seconds until it may."""
        now = self.clock()
        q = self._failures.get(key)
        if q is None:
            return 0
        self._expire(q, now)
        if not q:
            del self._failures[key]
            return 0
        if len(q) < self.limit:
            return 0
        return max(1, math.ceil(q[0] + self.window_s - now))

    def fail(self, key: str) -> None:
        now = self.clock()
        q = self._failures.get(key)
        if q is None:
            if len(self._failures) >= self.max_keys:
                self._evict(now)
            q = self._failures[key] = deque()
        self._expire(q, now)
        q.append(now)
        while len(q) > self.limit:
            q.popleft()

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)

    def _expire(self, q: deque[float], now: float) -> None:
        while q and q[0] + self.window_s <= now:
            q.popleft()

    def _evict(self, now: float) -> None:
        for k in [k for k, q in self._failures.items() if not q or q[-1] + self.window_s <= now]:
            del self._failures[k]
        if len(self._failures) >= self.max_keys:  # still full: drop the stalest key
            stalest = min(self._failures, key=lambda k: self._failures[k][-1])
            del self._failures[stalest]
