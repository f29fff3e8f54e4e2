"""Who shares the uplink now: active devices and whether the staff are busy.

Pure bookkeeping over a monotonic clock the caller passes in. The enforcer feeds it what
each accounting pass reads (devices that sent, the staff rule's packet counter) and asks
it whether the HTB guarantees must be re-set (``tc_plan.fair_kbit``,
``tc_plan.reserved_staff_kbit``). Logins may only lower the fair share at once
(``joined``); raising it again waits for the pass, so guarantees never add up to more
than the uplink by more than one device's share.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

ACTIVE_WINDOW_S = 10.0  # a device that sent within this long shares the capacity now
STAFF_WINDOW_S = 30.0  # the staff's guarantee is held this long after their last packet
DRIFT = 0.2  # device guarantees are re-set when the fair share moved this much


@dataclass
class Shares:
    active: int = 1  # devices sharing the community's capacity, as the tc plan has it
    staff_busy: bool = True  # the staff's guarantee is reserved, as the tc plan has it
    _last_sent: dict[str, float] = field(default_factory=dict)
    _staff_packets: int | None = None
    _staff_last: float | None = None

    @property
    def measured(self) -> bool:
        return self._staff_packets is not None or bool(self._last_sent)

    def assume(self, devices: int, staff_present: bool) -> None:
        """Before anything is measured (a start): every device and the staff are busy."""
        if not self.measured:
            self.active = max(1, devices)
            self.staff_busy = staff_present

    def seen(self, macs: Iterable[str], now: float) -> None:
        for mac in macs:
            self._last_sent[mac] = now

    def forget_except(self, macs: Iterable[str]) -> None:
        keep = set(macs)
        for mac in set(self._last_sent) - keep:
            del self._last_sent[mac]

    def staff_counter(self, packets: int, now: float) -> None:
        """The staff rule's packet counter: any change since the last read is activity
        (smaller: the table was reloaded, and anything since counts)."""
        before = self._staff_packets
        if before is not None and packets != before and packets > 0:
            self._staff_last = now
        self._staff_packets = packets

    def count_active(self, now: float) -> int:
        return max(1, sum(1 for t in self._last_sent.values() if now - t <= ACTIVE_WINDOW_S))

    def joined(self, mac: str, now: float) -> None:
        """A device logged in: it counts as active and lowers the fair share at once."""
        self._last_sent[mac] = now
        self.active = max(self.active, self.count_active(now))

    def want(self, now: float, staff_present: bool) -> tuple[int, bool] | None:
        """New (active, staff_busy) when the guarantees should be re-set, else None."""
        active = self.count_active(now)
        busy = staff_present and self._staff_last is not None
        busy = busy and now - (self._staff_last or 0.0) <= STAFF_WINDOW_S
        if busy == self.staff_busy:
            if active == self.active:
                return None
            lo, hi = sorted((active, self.active))
            if lo > 1 and (hi - lo) / hi < DRIFT:
                return None
        return active, busy
