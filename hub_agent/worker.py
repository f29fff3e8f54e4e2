"""The agent's one worker thread, with the portal's requests ahead of periodic passes.

SQLite and the kernel handles are used from this one thread only (pyroute2's sync API and
one connection), which also serialises them. A plain single-thread executor runs jobs in
arrival order, so a login could wait behind queued accounting, discovery and telemetry
passes on a slow box and the portal gave up first (503 while the login went through).
Here a job submitted ``urgent`` (the portal's requests) runs before every queued
non-urgent one; a running job is never interrupted, so a login waits at most for one pass.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")
URGENT, NORMAL = 0, 1


class PriorityWorker(Executor):
    def __init__(self, name: str = "hub-kernel") -> None:
        self._queue: list[tuple[int, int, Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._shutdown = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(NORMAL, lambda: fn(*args, **kwargs))

    def submit_urgent(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(URGENT, lambda: fn(*args, **kwargs))

    def _put(self, prio: int, job: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._cv:
            if self._shutdown:
                raise RuntimeError("worker is shut down")
            heapq.heappush(self._queue, (prio, next(self._order), fut, job))
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._shutdown:
                    self._cv.wait()
                if not self._queue:
                    return
                _, _, fut, job = heapq.heappop(self._queue)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(job())
            except BaseException as e:  # handed to the waiter, as ThreadPoolExecutor does
                fut.set_exception(e)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                for _, _, fut, _ in self._queue:
                    fut.cancel()
                self._queue.clear()
            self._cv.notify_all()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()
