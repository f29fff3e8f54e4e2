"""The agent's worker: urgent jobs (the portal's) overtake queued periodic passes."""

from __future__ import annotations

import threading
import time

import pytest

from hub_agent.api.protocol import UsedElsewhere
from hub_agent.worker import PriorityWorker


def test_urgent_jobs_run_before_queued_normal_ones() -> None:
    w = PriorityWorker()
    gate = threading.Event()
    order: list[str] = []
    try:
        running = w.submit(gate.wait)  # a pass in progress: never interrupted
        passes = [w.submit(order.append, f"pass{i}") for i in range(3)]
        login = w.submit_urgent(order.append, "login")
        gate.set()
        running.result(5)
        login.result(5)
        for p in passes:
            p.result(5)
        assert order == ["login", "pass0", "pass1", "pass2"]
    finally:
        w.shutdown()


def test_errors_reach_the_caller_and_the_worker_goes_on() -> None:
    w = PriorityWorker()
    try:
        with pytest.raises(ZeroDivisionError):
            w.submit_urgent(lambda: 1 / 0).result(5)
        assert w.submit(lambda: 42).result(5) == 42
    finally:
        w.shutdown()
    with pytest.raises(RuntimeError):
        w.submit(lambda: 1)


def test_each_job_kind_is_timed_waiting_and_running() -> None:
    from hub_agent.worker import kind_of

    w = PriorityWorker(report_every_s=3600)
    gate = threading.Event()
    try:
        held = w.submit(gate.wait)
        while not held.running():  # the pass holds the thread before the login arrives
            time.sleep(0.001)
        login = w.submit_urgent(gate.is_set)
        gate.set()
        held.result(5)
        assert login.result(5)
        w.submit(lambda: None).result(5)  # runs after both were recorded
        assert set(w.times) >= {"Event.wait", "Event.is_set!"}
        assert w.times["Event.is_set!"].count == 1
        assert w.times["Event.is_set!"].wait_max <= w.times["Event.wait"].run_max
    finally:
        w.shutdown()
    assert kind_of(lambda: 1, ()) == "test_each_job_kind_is_timed_waiting_and_running"
    assert kind_of(str, (UsedElsewhere(hub="h", bytes=1),)) == "str(UsedElsewhere)"
    assert kind_of(str, ("t",)) == "str"
