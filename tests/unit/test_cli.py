"""Console scripts answer --help and refuse unbuilt verbs honestly (non-zero exit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"


@pytest.mark.parametrize("script", ["hub-agent", "captive-portal", "hubctl"])
def test_help(script: str) -> None:
    r = subprocess.run([str(BIN / script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


def test_bad_config_is_refused_with_path(tmp_path: Path) -> None:
    bad = tmp_path / "hub.yaml"
    bad.write_text(EXAMPLE.read_text().replace("kind: mairie", "kind: castle"))
    r = subprocess.run(
        [str(BIN / "hub-agent"), "run", "--config", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "hub.kind" in r.stderr
