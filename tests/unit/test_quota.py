"""Pure quota verdicts: never negative, never counted twice, monotonic, midnight in Lomé."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from hub_agent.config import FreeTier, Plan
from hub_agent.sessions import quota
from hub_agent.sessions.accounting import fold
from hub_agent.sessions.quota import Limits, Usage, Verdict, verdict

T0 = 1_780_000_000.0

limits_st = st.builds(
    Limits,
    quota_bytes=st.none() | st.integers(1, 10**9),
    time_quota_s=st.none() | st.integers(1, 10**6),
    idle_timeout_s=st.integers(1, 10**5),
    throttle_on_data=st.booleans(),
)


@given(
    limits=limits_st,
    used=st.lists(st.integers(0, 10**8), min_size=1, max_size=20),
    steps=st.lists(st.floats(0, 10**4), min_size=1, max_size=20),
    exhausted_at=st.none() | st.integers(0, 19),
)
def test_verdicts_are_monotonic(
    limits: Limits, used: list[int], steps: list[float], exhausted_at: int | None
) -> None:
    # Usage only grows and time only advances (no new activity): severity never drops,
    # and an ended session stays ended.
    total, now, prev = 0, T0, quota.OK
    for i, (u, dt) in enumerate(zip(used, steps, strict=False)):
        total += u
        now += dt
        kernel = exhausted_at is not None and i >= exhausted_at
        v = verdict(limits, Usage(total, T0, T0, kernel_exhausted=kernel), now)
        assert v.severity >= prev.severity
        if prev.kind == "end":
            assert v.kind == "end"
        prev = v


@given(limits=limits_st, used=st.integers(0, 10**10), elapsed=st.floats(0, 10**7))
def test_remaining_is_never_negative_and_matches_verdict(
    limits: Limits, used: int, elapsed: float
) -> None:
    b = quota.bytes_remaining(limits, used)
    s = quota.seconds_remaining(limits, T0, T0 + elapsed)
    assert b is None or b >= 0
    assert s is None or s >= 0
    v = verdict(limits, Usage(used, T0, T0 + elapsed), T0 + elapsed)
    if b == 0:
        assert v.kind in ("throttle", "end")
    if v == Verdict("end", "data_quota"):
        assert b == 0


def test_reasons() -> None:
    lim = Limits(quota_bytes=1000, time_quota_s=3600, idle_timeout_s=600)
    assert verdict(lim, Usage(999, T0, T0 + 100), T0 + 100) == quota.OK
    assert verdict(lim, Usage(1000, T0, T0 + 100), T0 + 100) == Verdict("end", "data_quota")
    assert verdict(lim, Usage(0, T0, T0 + 3599), T0 + 3600) == Verdict("end", "time_quota")
    assert verdict(lim, Usage(0, T0, T0), T0 + 600) == Verdict("end", "idle")
    assert verdict(lim, Usage(5, T0, T0, kernel_exhausted=True), T0 + 1).reason == "data_quota"
    thr = Limits(quota_bytes=1000, time_quota_s=3600, idle_timeout_s=600, throttle_on_data=True)
    assert verdict(thr, Usage(5000, T0, T0 + 10), T0 + 10) == Verdict("throttle")
    assert verdict(thr, Usage(5000, T0, T0 + 10), T0 + 4000) == Verdict("end", "time_quota")


def test_limits_from_config() -> None:
    plan = Plan(id="p", name={"fr": "p"}, down_kbit=1, up_kbit=1, data_quota_mb=5,
                time_quota_min=60, idle_timeout_min=15, on_exhaustion="throttle")  # fmt: skip
    assert quota.plan_limits(plan) == Limits(5_000_000, 3600, 900, True)
    assert quota.free_limits(FreeTier(daily_mb=100)).quota_bytes == 100_000_000


def test_free_day_changes_at_midnight_in_lome() -> None:
    lome = ZoneInfo("Africa/Lome")
    before = datetime(2026, 3, 1, 23, 59, 59, tzinfo=lome).timestamp()
    assert quota.local_day(before) == "2026-03-01"
    assert quota.local_day(before + 1) == "2026-03-02"
    assert quota.next_midnight(before) == before + 1
    # the zone matters: midnight in Lomé is 01:00 in Paris (winter)
    assert quota.local_day(before + 1, "Europe/Paris") == "2026-03-02"
    assert quota.local_day(before - 3600, "Europe/Paris") == "2026-03-01"


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.integers(0, 5), max_size=40),
)
def test_fold_counts_every_byte_once(
    increments: list[tuple[int, int, bool]], replays: list[int]
) -> None:
    # A kernel counter that grows, sometimes restarts from 0 (kernel state recreated right
    # after a fold), and is sometimes read several times: the folded total is exact.
    k_up = k_down = last_up = last_down = 0
    true_total = counted = 0
    ambiguous = False
    for i, (du, dd, restart) in enumerate(increments):
        if restart:
            # undetectable only if the new counters are not below the last folded ones
            ambiguous |= (last_up or last_down) > 0 and du >= last_up and dd >= last_down
            k_up = k_down = 0
        k_up += du
        k_down += dd
        true_total += du + dd
        for _ in range(1 + (replays[i] if i < len(replays) else 0)):
            f = fold(last_up, last_down, k_up, k_down)
            assert f.delta_up >= 0 and f.delta_down >= 0
            counted += f.delta
            last_up, last_down = f.last_up, f.last_down
    # A restart that lands exactly on the old values is indistinguishable (and loses that
    # much); otherwise nothing is lost or double-counted.
    assert counted <= true_total
    if not ambiguous:
        assert counted == true_total


def test_throttled_device_still_times_out_when_idle() -> None:
    # Found by hypothesis: an idle-ended throttle session must not come back as "throttle".
    limits = Limits(quota_bytes=1, time_quota_s=None, idle_timeout_s=1, throttle_on_data=True)
    assert verdict(limits, Usage(1, T0, T0), T0 + 0.5) == Verdict("throttle")
    assert verdict(limits, Usage(1, T0, T0), T0 + 1) == Verdict("end", "idle")
