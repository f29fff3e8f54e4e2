"""A token bucket: the bandwidth cap while syncing.

The accounting is pure (``reserve`` takes the clock as an argument) so it is unit-tested
without sleeping; ``take`` is the async wrapper the downloader awaits before each chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate_bps: float, burst: float, now: float = 0.0) -> None:
        if rate_bps <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate_bps  # bytes per second
        self.burst = burst  # bytes that may go at once after an idle spell
        self.tokens = burst
        self.stamp = now

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` bytes' worth of tokens; return how long to wait before using them.

        Tokens may go negative (a debt), so a chunk larger than the burst is still allowed
        and simply costs its full time: the long-run rate is exactly ``rate``.
        """
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def take(self, n: int, clock: Callable[[], float] = time.monotonic) -> None:
        delay = self.reserve(n, clock())
        if delay > 0:
            await asyncio.sleep(delay)


def bucket_for_kbit(kbit: int, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
    """A bucket for a cap in kbit/s with a burst of 1/8 s: tight enough to hold ±10%."""
    rate = kbit * 1000 / 8
    return TokenBucket(rate, burst=max(16 * 1024, rate / 8), now=clock())
