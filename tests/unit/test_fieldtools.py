"""``hub-agent plan`` renders what the agent would apply and applies nothing; ``--trace``
logs what the appliers apply."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hub_agent.cli import main
from hub_agent.config import load_config
from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState, Grant
from hub_agent.fieldtools import render_plan, stored_state, traced, upstream_resolvers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
PHONE = Grant(mac="02:00:00:00:00:01", ip="10.42.0.50", down_kbit=2000, up_kbit=512)


def test_plan_renders_ruleset_tc_tree_and_dnsmasq_for_the_sessions() -> None:
    cfg = load_config(EXAMPLE, env={})
    text = render_plan(cfg, DesiredState(grants=(PHONE,)), ["9.9.9.9"])
    nft = text[text.index('{"nftables": [') : text.index("]}\n") + 2]
    cmds = json.loads(nft)["nftables"]  # the ruleset part is nft's JSON as is
    assert cmds[0] == {"add": {"table": {"family": "inet", "name": "relais"}}}
    assert "10.42.0.50" in nft
    # the phone's own class under the community, with its plan as the ceiling
    assert "class 1:" in text and " ceil 2mbit leaf" in text and " ceil 512kbit leaf" in text
    assert f"interface={cfg.network.lan.interface}\n" in text and "server=9.9.9.9\n" in text


def test_plan_command_applies_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("RELAIS_DATA_DIR", str(data))
    with pytest.raises(SystemExit) as done:
        main(["plan", "--config", str(EXAMPLE)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "# nft -j -f -" in out and "# tc (HTB)" in out and "# dnsmasq.conf" in out
    assert not data.exists(), "plan must not create the agent's data folder"


def test_stored_state_without_a_database_is_the_staff_devices() -> None:
    cfg = load_config(EXAMPLE, env={})
    state = stored_state(cfg.model_copy(update={"data_dir": Path("/nonexistent")}))
    assert {g.mac for g in state.grants} == {d.mac for d in cfg.staff.devices}
    assert all(g.staff for g in state.grants)


def test_upstream_resolvers_skip_the_hub_itself(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE, env={})
    cfg = cfg.model_copy(
        update={"network": cfg.network.model_copy(update={"wan": cfg.network.wan.model_copy(
            update={"dns_servers": []})})}
    )  # fmt: skip
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {cfg.network.lan.address.ip}\nnameserver 1.1.1.1\n")
    assert upstream_resolvers(cfg, resolv) == ["1.1.1.1"]


def test_trace_logs_each_nft_command_and_tc_call(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(EXAMPLE, env={})
    enforcer = traced(Enforcer(cfg, dry_run=True))
    with caplog.at_level(logging.INFO, logger="relais.trace"):
        enforcer.reconcile(DesiredState(grants=(PHONE,)))
    lines = [r.getMessage() for r in caplog.records if r.name == "relais.trace"]
    assert any(ln.startswith("nft ") and "10.42.0.50" in ln for ln in lines)
    assert any(ln.startswith("tc ") and "htb" in ln for ln in lines), lines[-5:]
    enforcer.close()
