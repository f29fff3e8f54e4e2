"""The portal's word on a config that moves its listeners, for the agent's check after apply.

The portal re-binds by itself when the agent's config copy names another address or port
(captive_portal/live_config.py), in its own unprivileged process: the agent cannot see
whether it could. A config it cannot follow (the port is taken, a port below 1024 it may not
bind) must not be reported applied while the kernel sends captive phones to a port where
nothing answers. So the portal says (``PortalListen``), and the agent's check after an apply
waits for that word: a refusal rolls the config back (ConfigSync), the reason naming the
field and the portal's error. A portal that is not following (stopped, crashed) is not
waited for: its change-feed long poll (``Watch``) tells that it is there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FOLLOWING_S = 60.0  # a portal's long poll comes back within 20 s (WATCH_WAIT_S) + retry
VERDICT_S = 20.0  # the portal reads its copy every 3 s; a slow, busy box takes longer
KEEP = 16  # words kept (versions): a few pushes in flight at most


class PortalFollow:
    """Thread-safe: the loop records (``seen``, ``said``), the apply check waits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._seen: float | None = None
        self._words: dict[int, str | None] = {}  # config version -> None (serving) or why not

    def seen(self) -> None:
        """A portal asked for the change feed: it is running and following."""
        with self._cond:
            self._seen = self._clock()

    def following(self) -> bool:
        with self._cond:
            return self._seen is not None and self._clock() - self._seen <= FOLLOWING_S

    def said(self, version: int, error: str | None) -> None:
        with self._cond:
            self._words[version] = error
            for old in sorted(self._words)[:-KEEP]:
                del self._words[old]
            self._cond.notify_all()

    def forget(self, version: int) -> None:
        """Before applying ``version``: a word on an earlier config of that number (pushed
        again after a rollback) is not about this one."""
        with self._cond:
            self._words.pop(version, None)

    def heard(self, version: int) -> bool:
        with self._cond:
            return version in self._words

    def refusal(self, version: int, timeout_s: float = VERDICT_S) -> str | None:
        """Why the portal cannot serve config ``version``; None when it serves there, when
        no portal is following, or when it said nothing in time (logged: not a refusal)."""
        if not self.following():
            return None
        with self._cond:
            if not self._cond.wait_for(lambda: version in self._words, timeout_s):
                log.warning("config v%d: the portal did not say whether it moved", version)
                return None
            return self._words[version]
