"""The agent's one worker thread, with the portal's requests ahead of periodic passes.

SQLite and the kernel handles are used from this one thread only (pyroute2's sync API and
one connection), which also serialises them. A plain single-thread executor runs jobs in
arrival order, so a login could wait behind queued accounting, discovery and telemetry
passes on a slow box and the portal gave up first (503 while the login went through).
Here a job submitted ``urgent`` (the portal's requests, the centre's grants) runs before
every queued non-urgent one; a running job is never interrupted, so an urgent job waits at
most for one job: long passes are submitted as several short jobs for that reason.

Each job is timed (queue wait and run, per kind: the function's name) and the totals are
logged every ``REPORT_EVERY_S``: that log is how a tail in the portal's or a grant's
latency is traced to what held the thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
URGENT, NORMAL = 0, 1
REPORT_EVERY_S = 30.0


@dataclass
class JobTimes:
    """One kind of job's queue waits and run times since the last report (seconds)."""

    count: int = 0
    wait_sum: float = 0.0
    wait_max: float = 0.0
    run_sum: float = 0.0
    run_max: float = 0.0

    def add(self, wait: float, run: float) -> None:
        self.count += 1
        self.wait_sum += wait
        self.wait_max = max(self.wait_max, wait)
        self.run_sum += run
        self.run_max = max(self.run_max, run)

    def line(self, kind: str) -> str:
        n = max(1, self.count)
        return (
            f"{kind} n={self.count} wait avg={self.wait_sum / n * 1000:.0f}ms "
            f"max={self.wait_max * 1000:.0f}ms run avg={self.run_sum / n * 1000:.0f}ms "
            f"max={self.run_max * 1000:.0f}ms total={self.run_sum:.2f}s"
        )


def kind_of(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """A job's label: the function's qualified name without ``<locals>``/``<lambda>``
    noise, and the first argument's type when it is a message (``AgentHandler.handle(Login)``,
    a pydantic model or a dataclass)."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    name = name.replace(".<locals>", "").replace(".<lambda>", "")
    message = args and any(
        hasattr(type(args[0]), a) for a in ("model_fields", "__dataclass_fields__")
    )
    if message:
        name += f"({type(args[0]).__name__})"
    return name


_Job = tuple[int, int, float, str, "Future[Any]", Callable[[], Any]]


class PriorityWorker(Executor):
    def __init__(self, name: str = "hub-kernel", report_every_s: float = REPORT_EVERY_S) -> None:
        self._queue: list[_Job] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._shutdown = False
        self._report_every_s = report_every_s
        self._next_report = time.monotonic() + report_every_s
        self.times: dict[str, JobTimes] = {}  # worker thread only; reset at each report
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(NORMAL, kind_of(fn, args), lambda: fn(*args, **kwargs))

    def submit_urgent(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(URGENT, kind_of(fn, args), lambda: fn(*args, **kwargs))

    def _put(self, prio: int, kind: str, job: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._cv:
            if self._shutdown:
                raise RuntimeError("worker is shut down")
            queued = time.monotonic()
            heapq.heappush(self._queue, (prio, next(self._order), queued, kind, fut, job))
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._shutdown:
                    self._cv.wait()
                if not self._queue:
                    return
                prio, _, queued, kind, fut, job = heapq.heappop(self._queue)
            if not fut.set_running_or_notify_cancel():
                continue
            started = time.monotonic()
            try:
                fut.set_result(job())
            except BaseException as e:  # handed to the waiter, as ThreadPoolExecutor does
                fut.set_exception(e)
            ended = time.monotonic()
            label = f"{kind}!" if prio == URGENT else kind
            self.times.setdefault(label, JobTimes()).add(started - queued, ended - started)
            if ended >= self._next_report:
                self._report(ended)

    def _report(self, now: float) -> None:
        self._next_report = now + self._report_every_s
        busiest = sorted(self.times.items(), key=lambda kv: -kv[1].run_sum)
        for kind, t in busiest:
            log.info("worker %s", t.line(kind))
        self.times = {}

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                for job in self._queue:
                    job[4].cancel()
                self._queue.clear()
            self._cv.notify_all()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()
