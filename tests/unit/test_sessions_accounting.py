"""Accounting through SessionService: usage equals the bytes moved, whatever the order of
samples, repeats, kernel restarts and service restarts (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_agent.enforce.model import Counters
from hub_agent.sessions.accounting import DayDelta, fold, merge_days
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.service import SessionService
from tests.unit.test_sessions_service import make_config

T0 = 1_780_000_000.0
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03")

step = st.one_of(
    st.tuples(
        st.just("traffic"), st.sampled_from(MACS), st.integers(0, 50_000), st.integers(0, 500_000)
    ),
    st.tuples(st.just("repeat")),  # the same kernel sample read again
    st.tuples(st.just("restart_service")),  # the agent restarts (new service object)
    st.tuples(st.just("reboot"), st.sampled_from(MACS)),  # kernel state recreated, announced
    st.tuples(st.just("silent_reboot"), st.sampled_from(MACS)),  # ... noticed by the counters
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=40))
def test_usage_equals_bytes_moved(steps: list[tuple[Any, ...]]) -> None:
    db = open_sessions_db(":memory:")
    cfg = make_config(None, plans=[{"id": "big", "name": {"fr": "big"}, "down_kbit": 1000,
                                    "up_kbit": 1000, "devices_per_voucher": 1}])  # fmt: skip
    svc = SessionService(cfg, db)
    codes = svc.issue_local_vouchers("big", len(MACS), T0)
    for mac, code in zip(MACS, codes, strict=True):
        assert svc.login(mac, None, "voucher", code, T0)[1] is None
    kernel = {m: [0, 0] for m in MACS}
    truth = dict.fromkeys(MACS, 0)
    now = T0

    def sample() -> dict[str, Counters]:
        return {m: Counters(m, u, d) for m, (u, d) in kernel.items()}

    for s in steps:
        now += 1
        match s:
            case ("traffic", mac, up, down):
                kernel[mac][0] += up
                kernel[mac][1] += down
                truth[mac] += up + down
            case ("restart_service",):
                svc = SessionService(cfg, db)
            case ("reboot", mac):
                svc.account(sample(), now)  # the last pass before the power cut
                svc.note_kernel_reset([mac], now)
                kernel[mac] = [0, 0]
            case ("silent_reboot", mac):
                svc.account(sample(), now)
                kernel[mac] = [0, 0]
        svc.account(sample(), now)  # "repeat" is just another pass over the same counters

    used = dict(db.execute("SELECT mac, bytes_up + bytes_down FROM sessions").fetchall())
    daily = db.execute("SELECT sum(bytes) FROM usage_daily").fetchone()[0] or 0
    assert used == truth
    assert daily == sum(truth.values())
    assert all(v >= 0 for v in used.values())


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12),
       st.integers(0, 10**12))  # fmt: skip
def test_fold_never_negative_and_idempotent(lu: int, ld: int, su: int, sd: int) -> None:
    f = fold(lu, ld, su, sd)
    assert f.delta_up >= 0 and f.delta_down >= 0
    again = fold(f.last_up, f.last_down, su, sd)
    assert (again.delta_up, again.delta_down, again.reset) == (0, 0, False)


def test_merge_days_sums_per_device_and_day() -> None:
    merged = merge_days(
        [DayDelta("a", "d1", 5, 5), DayDelta("a", "d1", 3, 0), DayDelta("b", "d1", 0, 0)]
    )
    assert merged == [DayDelta("a", "d1", 8, 5)]
