"""Push planning: layer merge, templates, target selection, validation, waves (pure)."""

from __future__ import annotations

import pytest

from provisioning import pushplan
from provisioning.hubdoc import base_document
from provisioning.pushplan import HubView, PushError, PushFile

SCHOOL = HubView("tg-kara-ecole-01", "school", "EPP Kara", "Kara", "Kozah", ("pilot",))
MAIRIE = HubView("tg-lome-mairie-01", "mairie", "Mairie de Lomé", "Maritime", "Golfe")
CLINIC = HubView("tg-sokode-csps-01", "clinic", "CSPS Sokodé", "Centrale")


def forced(hub: HubView) -> dict[str, object]:
    return {"hub": {"id": hub.id, "kind": hub.kind, "name": hub.name}}


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert pushplan.deep_merge(base, {"a": {"y": [3]}, "c": 2}) == {
        "a": {"x": 1, "y": [3]},
        "b": 1,
        "c": 2,
    }
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # inputs untouched


def test_layers_apply_in_order_defaults_kind_region_group_hub() -> None:
    pf = pushplan.parse_push_file(
        {
            "defaults": {"mqtt": {"telemetry_interval_s": 60}},
            "kinds": {"school": {"mqtt": {"telemetry_interval_s": 30}}},
            "regions": {"Kara": {"content": {"budget_mb": 1}}},
            "groups": {"pilot": {"mqtt": {"telemetry_interval_s": 10}}},
            "hubs": {"tg-kara-ecole-01": {"content": {"budget_mb": 7}}},
        }
    )
    names = [n for n, _ in pushplan.layers_for(SCHOOL, pf)]
    assert names == [
        "defaults",
        "kinds.school",
        "regions.Kara",
        "groups.pilot",
        "hubs.tg-kara-ecole-01",
    ]
    r = pushplan.render_hub(SCHOOL, base_document(), pf, 5, forced(SCHOOL))
    assert r.config.mqtt.telemetry_interval_s == 10
    assert r.config.content.budget_mb == 7
    assert r.config.version == 5
    other = pushplan.render_hub(MAIRIE, base_document(), pf, 2, forced(MAIRIE))
    assert other.config.mqtt.telemetry_interval_s == 60
    assert other.layers == ("defaults",)


def test_plain_document_is_defaults_and_unknown_section_refused() -> None:
    assert pushplan.parse_push_file({"free_tier": {"daily_mb": 5}}).defaults == {
        "free_tier": {"daily_mb": 5}
    }
    with pytest.raises(PushError, match="unknown sections"):
        pushplan.parse_push_file({"defaults": {}, "schools": {}})
    with pytest.raises(PushError, match="unknown kinds"):
        pushplan.parse_push_file({"kinds": {"castle": {}}})


def test_templates_render_in_a_sandbox_with_the_hub() -> None:
    pf = PushFile(
        defaults={"portal": {"terms": {"fr": "Bienvenue à {{ hub.name }} ({{ hub.region }})"}}}
    )
    r = pushplan.render_hub(SCHOOL, base_document(), pf, 3, forced(SCHOOL))
    assert r.config.portal.terms["fr"] == "Bienvenue à EPP Kara (Kara)"
    bad = PushFile(defaults={"hub": {"name": "{{ hub.nope }}"}})
    with pytest.raises(PushError, match=r"tg-kara-ecole-01.*hub\.name.*template"):
        pushplan.render_hub(SCHOOL, base_document(), bad, 3, forced(SCHOOL))
    unsafe = PushFile(defaults={"hub": {"name": "{{ ''.__class__.__mro__ }}"}})
    with pytest.raises(PushError):
        pushplan.render_hub(SCHOOL, base_document(), unsafe, 3, forced(SCHOOL))


def test_forced_identity_wins_over_the_file() -> None:
    pf = PushFile(defaults={"hub": {"id": "someone-else", "kind": "clinic"}})
    r = pushplan.render_hub(SCHOOL, base_document(), pf, 2, forced(SCHOOL))
    assert (r.config.hub.id, r.config.hub.kind) == (SCHOOL.id, "school")


def test_invalid_config_names_hub_and_field_and_refuses_everything() -> None:
    pf = PushFile(kinds={"school": {"free_tier": {"daily_mb": -1}}})
    hubs = [MAIRIE, SCHOOL]
    with pytest.raises(PushError) as e:
        pushplan.render_all(
            hubs,
            {h.id: base_document() for h in hubs},
            pf,
            {h.id: 2 for h in hubs},
            {h.id: forced(h) for h in hubs},
        )
    assert "hub tg-kara-ecole-01" in str(e.value)
    assert "free_tier.daily_mb" in str(e.value)
    assert "tg-lome-mairie-01" not in str(e.value)


def test_select_targets() -> None:
    hubs = [SCHOOL, MAIRIE, CLINIC]

    def ids(group: str) -> list[str]:
        return [h.id for h in pushplan.select_targets(hubs, group)]

    assert ids("schools") == [SCHOOL.id]
    assert ids("clinic") == [CLINIC.id]
    assert ids("Maritime") == [MAIRIE.id]
    assert ids("region:maritime") == [MAIRIE.id]
    assert ids("pilot") == [SCHOOL.id]
    assert ids("all") == sorted(h.id for h in hubs)
    assert ids("nobody") == []


def test_waves_and_threshold() -> None:
    ids = [f"h{i:02d}" for i in range(10)]
    assert pushplan.plan_waves(ids, None) == [ids]
    waves = pushplan.plan_waves(ids, 25)
    assert [len(w) for w in waves] == [3, 3, 3, 1]
    assert [h for w in waves for h in w] == ids
    assert pushplan.plan_waves(ids[:3], 10) == [["h00"], ["h01"], ["h02"]]
    assert pushplan.plan_waves([], 10) == []
    assert pushplan.may_continue({"a": "applied", "b": "rejected"}, 1)
    assert not pushplan.may_continue({"a": "rolled_back", "b": "timeout"}, 1)
    assert not pushplan.may_continue({"a": "rejected"}, 0)
    assert pushplan.parse_wave("10%") == 10
    with pytest.raises(PushError):
        pushplan.parse_wave("0%")
    with pytest.raises(PushError):
        pushplan.parse_wave("ten")
