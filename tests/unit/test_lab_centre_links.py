"""Each centre lab's link address is its own while it runs (lab/centre.py claims): two labs
side by side never share one, and a dead lab's claim is taken over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import centre


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(centre, "CLAIMS", tmp_path / "links")
    monkeypatch.setattr(centre, "OCTETS", range(100, 103))
    return tmp_path / "links"


def test_claims_are_distinct_until_released(claims: Path) -> None:
    got = {centre.claim_octet() for _ in range(3)}
    assert got == {100, 101, 102}
    with pytest.raises(RuntimeError, match="no free centre link address"):
        centre.claim_octet()
    centre.release_octet(101)
    assert centre.claim_octet() == 101


def test_a_dead_lab_s_claim_is_taken_over_a_live_one_is_not(claims: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    claims.mkdir(parents=True)
    (claims / "100").write_text(dead)  # a lab killed before its close
    (claims / "101").write_text("1")  # init: alive
    (claims / "102").write_text("1")
    assert centre.claim_octet() == 100
    assert (claims / "100").read_text() != dead
