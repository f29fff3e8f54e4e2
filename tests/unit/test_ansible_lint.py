"""The deployment code's static checks: syntax, ansible-lint's production profile, and the
role conventions (every setting in defaults/main.yml, prefixed relais_ and commented)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = REPO / ".venv" / "bin"
ROLES = sorted(p for p in (ANSIBLE_DIR / "roles").iterdir() if p.is_dir())


def _tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.exists():
        pytest.skip(f"{name} not installed in .venv (pip install -e '.[dev]')")
    return path


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [str(a) for a in argv],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_playbooks_pass_syntax_check() -> None:
    proc = _run(_tool("ansible-playbook"), "--syntax-check", "hub.yml", "controller.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "playbook: hub.yml" in proc.stdout and "playbook: controller.yml" in proc.stdout


def test_ansible_lint_production_profile_passes() -> None:
    proc = _run(_tool("ansible-lint"), "--profile", "production", "--nocolor")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out


def test_example_inventory_has_both_groups() -> None:
    proc = _run(_tool("ansible-inventory"), "--list")
    assert proc.returncode == 0, proc.stderr
    groups = yaml.safe_load(proc.stdout)
    assert groups["hubs"]["children"] and groups["controllers"]["hosts"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_prefixed_and_commented(role: Path) -> None:
    lines = (role / "defaults" / "main.yml").read_text().splitlines()
    keys = 0
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):", line)
        if not m:
            continue
        keys += 1
        assert m.group(1).startswith("relais_"), f"{role.name}: {m.group(1)} lacks relais_"
        # A comment right above the setting, or above the run of settings it belongs to.
        j = i - 1
        while j >= 0 and re.match(r"^[A-Za-z_][A-Za-z0-9_]*:|^\s", lines[j]):
            j -= 1
        assert j >= 0 and lines[j].startswith("#"), f"{role.name}: {m.group(1)} has no comment"
    assert keys > 0


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_templates_use_only_defined_settings(role: Path) -> None:
    """Every relais_ name a role's tasks or templates read is declared by some role's
    defaults or vars (a typo would otherwise only show on a real box)."""
    declared: set[str] = set()
    for r in ROLES:
        for f in ("defaults/main.yml", "vars/main.yml"):
            p = r / f
            if p.exists():
                declared |= set(yaml.safe_load(p.read_text()) or {})
    used: set[str] = set()
    registered: set[str] = set()
    for p in role.rglob("*"):
        if p.is_file() and p.suffix in {".yml", ".j2"}:
            # Tags (relais_config, ...) name parts of a role, not settings.
            text = re.sub(r"^\s*tags: .*$", "", p.read_text(), flags=re.M)
            used |= set(re.findall(r"\b(relais_[a-z0-9_]+)\b", text))
            registered |= set(re.findall(r"register: (relais_[a-z0-9_]+)", text))
            registered |= set(re.findall(r"^\s+(relais_[a-z0-9_]+): .*$", text, re.M))
    unknown = used - declared - registered - {"relais_package"}  # the shared role's name
    assert not unknown, f"{role.name} reads undeclared settings: {sorted(unknown)}"
