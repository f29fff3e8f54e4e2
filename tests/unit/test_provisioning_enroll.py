"""Enrollment: ACL plan, first config, files on disk, rotation; fleet table from the registry."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub_agent.config import validate_config
from hub_agent.signing import SigningKey
from provisioning import fleet, registry
from provisioning.enroll import render_acl

BIN = Path(sys.executable).parent


def hubctl(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hubctl"), "--state", str(state), *args], capture_output=True, text=True
    )


def test_acl_confines_each_hub_to_its_own_topics() -> None:
    acl = render_acl(["hub-b", "hub-a"], "relais-central")
    blocks = acl.split("\n\n")
    assert "user relais-central\ntopic readwrite relais/#" in blocks[0]
    hub_a = next(b for b in blocks if b.startswith("user hub-a"))
    assert hub_a.splitlines()[1:] == [
        "topic write relais/hubs/hub-a/state",
        "topic write relais/hubs/hub-a/health",
        "topic write relais/hubs/hub-a/events",
        "topic write relais/hubs/hub-a/config/reported",
        "topic read relais/hubs/hub-a/config/desired",
        "topic write relais/hubs/hub-a/payments/request",
        "topic write relais/hubs/hub-a/payments/ack",
        "topic read relais/hubs/hub-a/payments/grant",
        "topic read relais/hubs/hub-a/payments/status",
        "topic write relais/hubs/hub-a/balances/query",
        "topic read relais/hubs/hub-a/balances/answer",
    ]
    assert "hub-b/" not in hub_a


@pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None,
    reason="mosquitto_passwd not installed",
)
def test_enroll_writes_credentials_config_and_host_vars_and_rotates(
    tmp_path: Path, central_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAIS_CENTRAL_DB", central_db_url)  # hubctl's --db
    state = tmp_path / "central"
    r = hubctl(
        state,
        "enroll",
        "tg-kara-ecole-01",
        "--kind",
        "school",
        "--name",
        "EPP Kara",
        "--region",
        "Kara",
        "--group",
        "pilot",
    )
    assert r.returncode == 0, r.stderr
    caretaker = r.stdout.split("Caretaker password (shown once): ")[1].strip()
    key_file = state / "signing" / "central.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_pem = key_file.read_bytes()
    hv_path = state / "ansible" / "host_vars" / "tg-kara-ecole-01.yml"
    assert stat.S_IMODE(hv_path.stat().st_mode) == 0o600
    hv = yaml.safe_load(hv_path.read_text())
    cfg = validate_config(hv["relais_hub_config"])
    assert (cfg.version, cfg.hub.id, cfg.hub.kind, cfg.hub.region) == (
        1,
        "tg-kara-ecole-01",
        "school",
        "Kara",
    )
    assert cfg.mqtt.username == "tg-kara-ecole-01" == hv["relais_mqtt_username"]
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == hv["relais_mqtt_password"]
    assert cfg.trust.central_public_key == SigningKey.load(key_file).public_b64
    assert hv["relais_central_public_key"] == cfg.trust.central_public_key
    from captive_portal.security import verify_password  # the portal accepts our hash

    assert verify_password(caretaker, hv["relais_admin_password_hash"])
    assert caretaker not in hv_path.read_text()
    passwd = (state / "mosquitto" / "passwd").read_text()
    assert "tg-kara-ecole-01:$7$" in passwd and "relais-central:$7$" in passwd
    assert hv["relais_mqtt_password"] not in passwd
    acl = (state / "mosquitto" / "acl").read_text()
    assert "topic write relais/hubs/tg-kara-ecole-01/health" in acl

    db = registry.open_registry(central_db_url)
    row = registry.get_hub(db, "tg-kara-ecole-01")
    assert row is not None and row["desired_version"] == 1
    assert row["lat"] is not None and 9 < row["lat"] < 11
    assert registry.hub_groups(row) == ["pilot"]
    stored = registry.latest_config(db, "tg-kara-ecole-01")
    assert stored is not None and stored["mqtt"]["password"] is None  # no secret in the DB
    first_fp = row["cred_fingerprint"]

    r2 = hubctl(state, "enroll", "tg-kara-ecole-01", "--kind", "school", "--name", "EPP Kara")
    assert r2.returncode == 0, r2.stderr
    assert "rotated" in r2.stdout
    hv2 = yaml.safe_load(hv_path.read_text())
    assert hv2["relais_mqtt_password"] != hv["relais_mqtt_password"]
    assert hv2["relais_hub_config"]["version"] == 2
    assert key_file.read_bytes() == key_pem  # the central key is created once
    row2 = registry.get_hub(db, "tg-kara-ecole-01")
    assert row2 is not None and row2["cred_fingerprint"] != first_fp
    assert passwd != (state / "mosquitto" / "passwd").read_text()

    r3 = hubctl(state, "fleet", "--json")
    assert r3.returncode == 0, r3.stderr
    rows = json.loads(r3.stdout)
    assert rows[0]["id"] == "tg-kara-ecole-01" and rows[0]["status"] == "never"
    assert rows[0]["config_status"] == "pending"
    r4 = hubctl(state, "fleet")
    assert "tg-kara-ecole-01" in r4.stdout and "1 never" in r4.stdout


def test_enroll_refuses_a_bad_hub_id(tmp_path: Path) -> None:
    r = hubctl(tmp_path, "enroll", "Bad_ID", "--kind", "school", "--name", "x")
    assert r.returncode == 2
    assert "hub.id" in r.stderr


def test_fleet_rows_status_and_metrics() -> None:
    now = 10_000.0
    base = {"id": "h", "kind": "school", "name": "H", "desired_version": 3}
    assert fleet.fleet_row(base, now).status == "never"
    on = {
        **base,
        "online": 1,
        "last_seen": now - 10,
        "state_ts": now - 100,
        "last_health": json.dumps({"cpu": 12, "dsk": 40, "dev": 7, "srv": 2_500_000}),
        "reported_version": 3,
        "reported_status": "applied",
    }
    r = fleet.fleet_row(on, now)
    assert (r.status, r.cpu, r.disk, r.clients, r.data_today_mb, r.config_status) == (
        "online",
        12,
        40,
        7,
        2.5,
        "applied",
    )
    assert fleet.fleet_row({**on, "last_seen": now - 1000}, now).status == "silent"
    assert fleet.fleet_row({**on, "online": 0}, now).status == "offline"
    assert fleet.fleet_row({**on, "reported_version": 2}, now).config_status == "pending"
    text = fleet.render_table([r], now)
    assert "10s ago" in text and "v3/3 applied" in text
