"""Pure accounting: fold a kernel counter sample into stored usage.

The kernel reports bytes counted since the device's kernel state was created; that state
is recreated (counters back to 0) after a reboot, a re-authorisation or a flush. The store
keeps, next to each session's usage, the last kernel values it has folded in, updated in
the same transaction as the usage, so:

* the same sample folded twice (a restart re-reading the kernel) adds nothing;
* a counter lower than the last one means the kernel state was recreated: the whole
  sample is new traffic (bytes moved between the last fold and the recreation are the only
  loss, bounded by one interval);
* the service resets the baseline to 0 itself whenever it asks for a new kernel state.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fold:
    delta_up: int
    delta_down: int
    last_up: int  # the new baseline to store
    last_down: int
    reset: bool  # the kernel state was recreated since the last fold

    @property
    def delta(self) -> int:
        return self.delta_up + self.delta_down


def fold(last_up: int, last_down: int, sample_up: int, sample_down: int) -> Fold:
    if sample_up < 0 or sample_down < 0:
        raise ValueError("kernel counters cannot be negative")
    # Both directions live in the same kernel state: if either went down, both restarted.
    reset = sample_up < last_up or sample_down < last_down
    if reset:
        return Fold(sample_up, sample_down, sample_up, sample_down, True)
    return Fold(sample_up - last_up, sample_down - last_down, sample_up, sample_down, False)


@dataclass(frozen=True)
class DayDelta:
    """Bytes to add to ``usage_daily`` for (mac, day); ``free`` also counts for the free tier."""

    mac: str
    day: str
    bytes: int
    free_bytes: int


def merge_days(deltas: list[DayDelta]) -> list[DayDelta]:
    """One row per (mac, day): several sessions of one device may fold in the same pass."""
    acc: dict[tuple[str, str], tuple[int, int]] = {}
    for d in deltas:
        b, f = acc.get((d.mac, d.day), (0, 0))
        acc[(d.mac, d.day)] = (b + d.bytes, f + d.free_bytes)
    return [DayDelta(m, day, b, f) for (m, day), (b, f) in sorted(acc.items()) if b or f]
