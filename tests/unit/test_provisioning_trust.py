"""What enrollment and push hand a hub lets it verify central vouchers offline and sync its
library: the deployment's voucher secret and the content manifest travel with the config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub_agent.config import validate_config
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService
from hub_agent.store import open_db
from provisioning import registry
from provisioning.push import prepare
from provisioning.pushplan import parse_push_file
from provisioning.statedir import StateDir

BIN = Path(sys.executable).parent
HUB = "tg-sokode-clinique-01"

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed"
)


def hubctl(state: Path, *args: str) -> str:
    r = subprocess.run(
        [str(BIN / "hubctl"), "--state", str(state), *args], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_central_code_works_on_an_enrolled_hub_that_never_saw_it(
    tmp_path: Path, central_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAIS_CENTRAL_DB", central_db_url)  # hubctl's --db
    state = tmp_path / "central"
    hubctl(state, "enroll", HUB, "--kind", "clinic", "--name", "CMS Sokodé")
    hv = yaml.safe_load((state / "ansible" / "host_vars" / f"{HUB}.yml").read_text())
    config = validate_config(hv["relais_hub_config"])
    assert config.trust.voucher_secret is not None
    # The registry keeps no copy of the secret.
    db = registry.open_registry(central_db_url)
    stored = registry.latest_config(db, HUB)
    assert stored is not None and stored["trust"]["voucher_secret"] is None

    plan = config.plans[0].id
    code = hubctl(state, "vouchers", "issue", "--plan", plan, "--count", "1").split()[0]
    hub_db = open_db(tmp_path / "hub.db", SESSIONS)
    view, error = SessionService(config, hub_db).login(
        "02:00:00:00:00:07", "10.42.0.107", "voucher", code, now=1_800_000_000
    )
    assert error is None and view is not None and view.plan_id == plan


def test_push_carries_the_secret_and_the_hubs_library_manifest(
    tmp_path: Path, central_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAIS_CENTRAL_DB", central_db_url)  # hubctl's --db
    state = tmp_path / "central"
    hubctl(state, "enroll", HUB, "--kind", "clinic", "--name", "CMS Sokodé")
    guide = tmp_path / "guide.pdf"
    guide.write_bytes(b"%PDF-1.4 guide de sante\n")
    hubctl(
        state, "content", "add", "guide-sante", "--kind", "pdf",
        "--url", "http://198.51.100.1/guide.pdf", "--title-fr", "Guide de santé",
        "--file", str(guide),
    )  # fmt: skip
    hubctl(state, "content", "assign", "guide-sante", "--kind", "clinic")
    db = registry.open_registry(central_db_url)
    pf = parse_push_file({"defaults": {"free_tier": {"daily_mb": 50}}})
    [rendered] = prepare(StateDir(state), db, pf, hub_id=HUB)
    cfg = rendered.config
    assert cfg.free_tier.daily_mb == 50
    assert cfg.trust.voucher_secret is not None
    assert [i.id for i in cfg.content.items] == ["guide-sante"]
