"""Voucher codes: alphabet, grouping, typo detection, and offline-verifiable central codes."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub_agent.sessions.vouchers import (
    ALPHABET,
    CODE_LEN,
    MONTHS,
    SERIALS,
    format_code,
    make_central_code,
    month_end,
    month_index,
    new_local_code,
    normalise_code,
    plan_tag,
    verify_central_code,
)

SECRET = b"deployment-secret-for-tests-0001"


def test_alphabet_has_no_ambiguous_symbols() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 31
    for bad in "0O1IL":  # entry upper-cases, so "l" and "o" are refused too
        assert bad not in ALPHABET
    assert normalise_code("l" * 12) is None


def test_local_codes_are_short_grouped_and_valid() -> None:
    codes = {new_local_code() for _ in range(500)}
    assert len(codes) == 500
    for c in codes:
        assert len(c) == CODE_LEN <= 12
        assert set(c) <= set(ALPHABET)
        assert normalise_code(c) == c
        printed = format_code(c)
        assert printed.count("-") == 2 and printed.replace("-", "") == c


def test_entry_ignores_dashes_spaces_and_case() -> None:
    c = new_local_code()
    typed = " " + format_code(c).lower().replace("-", " - ") + "\t"
    assert normalise_code(typed) == c


@pytest.mark.parametrize("text", ["", "ABC", "O" * 12, "1" * 12, "2" * 13, "ABCD-EFGH-JKM!"])
def test_garbage_is_not_a_code(text: str) -> None:
    assert normalise_code(text) is None


def test_every_single_symbol_typo_is_caught() -> None:
    rnd = random.Random(6)
    for _ in range(30):
        c = new_local_code()
        for pos, sym in itertools.product(range(CODE_LEN), ALPHABET):
            if sym != c[pos]:
                assert normalise_code(c[:pos] + sym + c[pos + 1 :]) is None
        # and swapping two different neighbours
        pos = rnd.randrange(CODE_LEN - 1)
        if c[pos] != c[pos + 1]:
            swapped = c[:pos] + c[pos + 1] + c[pos] + c[pos + 2 :]
            assert normalise_code(swapped) is None


@given(
    plan=st.sampled_from(["heure", "jour", "semaine", "mois-etudiant"]),
    month=st.integers(0, MONTHS - 1),
    serial=st.integers(0, SERIALS - 1),
)
def test_central_code_round_trips_offline(plan: str, month: int, serial: int) -> None:
    code = make_central_code(SECRET, plan, month, serial)
    assert normalise_code(code) == code
    found = verify_central_code(SECRET, code, ["heure", "jour", "semaine", "mois-etudiant"])
    assert found is not None
    assert (found.plan_id, found.month, found.serial) == (plan, month, serial)


def test_central_code_needs_the_deployment_secret_and_a_known_plan() -> None:
    code = make_central_code(SECRET, "jour", 24, 7)
    assert verify_central_code(b"another-deployment-secret-00000", code, ["jour"]) is None
    assert verify_central_code(SECRET, code, ["heure"]) is None


def test_plan_tag_collisions_resolve_by_mac() -> None:
    # Two plan ids with the same 3-bit tag: the MAC, which binds the full id, decides.
    ids = [f"plan-{i}" for i in range(64)]
    a, b = next((x, y) for x, y in itertools.combinations(ids, 2) if plan_tag(x) == plan_tag(y))
    code = make_central_code(SECRET, b, 30, 99)
    found = verify_central_code(SECRET, code, [a, b])
    assert found is not None and found.plan_id == b


def test_forged_codes_with_valid_check_symbol_are_refused() -> None:
    # Random codes pass the check symbol but not the MAC (2**-25 each).
    plans = ["heure", "jour"]
    assert all(verify_central_code(SECRET, new_local_code(), plans) is None for _ in range(2000))


def test_month_window_in_local_time() -> None:
    m = month_index(1_767_225_600.0)  # 2026-01-01T00:00Z, Lomé is UTC+0
    assert m == 12
    assert month_end(m) == 1_769_904_000.0  # 2026-02-01T00:00Z
    with pytest.raises(ValueError, match="month"):
        make_central_code(SECRET, "jour", MONTHS, 0)
    with pytest.raises(ValueError, match="serial"):
        make_central_code(SECRET, "jour", 0, SERIALS)
