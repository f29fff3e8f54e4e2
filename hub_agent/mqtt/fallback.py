"""Which broker user the hub's link connects as during a credential rotation, and when it
tries the new one again (pure: the link applies it, the tests drive it with a fake clock).

``hubctl rotate`` pushes a config naming the new user, with the user the hub had before
as ``mqtt.fallback``. When the broker refuses the new user (its password file not
reloaded yet, a broker of the cluster behind), the link connects as the previous one at
once, and from then on tries the new one again now and then, with a backoff (jittered,
capped: a fleet rotated together does not knock all at once), until the broker accepts
it. The try is a separate short connection (``probe``), so the working link and its
session are not disturbed while the new user is still refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hub_agent.mqtt.core import Backoff

# First retry of the new user a couple of minutes after it was refused, then doubling
# (with jitter) up to half an hour: what a hub left behind costs the broker is one
# refused CONNECT per hub per half hour.
RETRY_NEW_MIN_S = 120.0
RETRY_NEW_MAX_S = 1800.0
RETRY_NEW_ENV = "RELAIS_MQTT_RETRY_NEW_S"  # the lab's override of the first delay


def retry_new_min_s() -> float:
    """The first delay; the lab shortens it through ``RELAIS_MQTT_RETRY_NEW_S``."""
    try:
        return max(0.1, float(os.environ.get(RETRY_NEW_ENV, RETRY_NEW_MIN_S)))
    except ValueError:
        return RETRY_NEW_MIN_S


@dataclass
class CredentialChoice:
    """``previous``: connecting as the fallback user; ``due``: when (monotonic seconds)
    the new user is to be tried again, None when no try is planned."""

    has_fallback: bool
    retry: Backoff = field(default_factory=lambda: Backoff(RETRY_NEW_MIN_S, RETRY_NEW_MAX_S))
    previous: bool = False
    due: float | None = None

    def refused(self, now: float) -> bool:
        """The broker refused the user of the last attempt. True: connect again at once
        (as the previous user); False: after the usual reconnect backoff."""
        if not self.has_fallback:
            return False
        if not self.previous:
            self.previous = True
            self.due = now + self.retry.next()
            return True
        # The previous user refused too (retired, or both unknown to this broker): the
        # next attempt names the new one again, so neither is given up for good.
        self.previous, self.due = False, None
        return False

    def probe_due(self, now: float) -> bool:
        """Time to try the new user (once: ``probed`` says how it went)."""
        if not self.previous or self.due is None or now < self.due:
            return False
        self.due = None
        return True

    def probed(self, accepted: bool, now: float) -> None:
        """The outcome of a try of the new user: accepted, the link moves to it (the next
        connect names it); otherwise the next try is planned further off."""
        if not self.previous:
            return
        if accepted:
            self.previous, self.due = False, None
            self.retry.reset()
        else:
            self.due = now + self.retry.next()
