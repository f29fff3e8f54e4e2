"""Where a mistyped code is wrong (hub_agent.sessions.vouchers.typo_position): pure, from
the input, the check scheme and the device's own codes only."""

from __future__ import annotations

import random

from hub_agent.sessions.vouchers import (
    _CONFUSED,
    ALPHABET,
    CODE_LEN,
    format_code,
    new_local_code,
    normalise_code,
    typo_position,
)


def _swap(code: str, pos: int, symbol: str) -> str:
    return code[:pos] + symbol + code[pos + 1 :]


def test_a_right_code_or_the_wrong_length_has_no_position() -> None:
    code = new_local_code()
    assert typo_position(code) is None and typo_position(format_code(code)) is None
    assert typo_position(code[:-1]) is None and typo_position(code + "A") is None
    assert typo_position("") is None


def test_a_symbol_outside_the_alphabet_is_the_one() -> None:
    code = format_code("ABCDEFGHJKMN")
    for bad in "0O1IL?":
        typed = code[:5] + bad + code[6:]  # dashes are not counted: n° 5
        assert typo_position(typed) == 5
        assert typo_position(typed.lower()) == 5
    assert typo_position("0BCD-EFGH-JKMO") is None  # two such symbols: cannot say


def test_a_code_the_device_holds_locates_any_slip_exactly() -> None:
    rng = random.Random(7)
    for _ in range(300):
        code = new_local_code()
        pos = rng.randrange(CODE_LEN)
        typed = _swap(code, pos, rng.choice([c for c in ALPHABET if c != code[pos]]))
        assert normalise_code(typed) is None  # the check catches every single slip
        assert typo_position(typed, [new_local_code(), code]) == pos + 1


def test_likely_slips_are_located_or_left_unsaid_never_misplaced() -> None:
    # Without the device's codes: a look-alike or keyboard neighbour is located at its
    # place, or not at all when another place could explain the check as well.
    rng = random.Random(18)
    located = 0
    for _ in range(2000):
        code = new_local_code()
        pos = rng.randrange(CODE_LEN)
        slips = sorted(_CONFUSED[code[pos]])
        typed = _swap(code, pos, rng.choice(slips))
        got = typo_position(typed)
        assert got in (None, pos + 1)
        located += got is not None
    assert located > 2000 * 0.3  # about 4 in 10 (measured), the rest unsaid


def test_slips_are_symmetric_and_stay_in_the_alphabet() -> None:
    for c, others in _CONFUSED.items():
        assert others and c not in others and others <= set(ALPHABET)
        assert all(c in _CONFUSED[o] for o in others)
    assert {"Z", "3"} <= _CONFUSED["2"] and "S" in _CONFUSED["5"] and "B" in _CONFUSED["8"]
