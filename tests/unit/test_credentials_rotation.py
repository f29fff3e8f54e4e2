"""Broker credential rotation as data: the two users of a hub, the fallback, retirement."""

from __future__ import annotations

from provisioning.credentials import Credentials, adopted, from_secret, rotated
from provisioning.enroll import render_acl
from provisioning.hubdoc import redacted


def test_rotation_alternates_between_the_two_users_and_keeps_the_old_one() -> None:
    first = rotated("hub-a", None, "p1")
    assert first == Credentials("hub-a", "p1")
    second = rotated("hub-a", first, "p2")
    assert second == Credentials("hub-a.alt", "p2", ("hub-a", "p1"))
    third = rotated("hub-a", second.retired(), "p3")
    assert third == Credentials("hub-a", "p3", ("hub-a.alt", "p2"))


def test_a_rotation_over_a_pending_one_keeps_the_user_the_hub_surely_has() -> None:
    pending = Credentials("hub-a.alt", "p2", ("hub-a", "p1"))
    again = rotated("hub-a", pending, "p3")
    assert again == Credentials("hub-a.alt", "p3", ("hub-a", "p1"))


def test_secret_round_trip_and_files_from_before_rotations() -> None:
    creds = Credentials("hub-a.alt", "p2", ("hub-a", "p1"))
    assert from_secret("hub-a", creds.secret()) == creds
    assert from_secret("hub-a", {"mqtt_password": "p0"}) == Credentials("hub-a", "p0")
    assert from_secret("hub-a", None) is None
    assert creds.mqtt_fields() == {
        "username": "hub-a.alt",
        "password": "p2",
        "fallback": {"username": "hub-a", "password": "p1"},
    }


def test_only_a_state_on_the_new_user_counts_as_adopted() -> None:
    creds = Credentials("hub-a.alt", "p2", ("hub-a", "p1"))
    assert adopted(creds, {"online": True, "user": "hub-a.alt", "credential": "new"})
    assert not adopted(creds, {"online": True, "user": "hub-a", "credential": "previous"})
    assert not adopted(creds, {"online": False, "user": "hub-a.alt", "credential": "new"})
    assert not adopted(creds, {"online": True})  # an agent from before rotations


def test_both_users_of_a_hub_get_its_rules_and_only_its_rules() -> None:
    blocks = {
        b.splitlines()[0]: b.splitlines()[1:]
        for b in render_acl(["hub-a"], "c").split("\n\n")
        if b.strip()
    }
    assert blocks["user hub-a"] == blocks["user hub-a.alt"]
    assert all("relais/hubs/hub-a/" in rule for rule in blocks["user hub-a"])


def test_the_registry_copy_of_a_config_holds_neither_password() -> None:
    wire = {
        "mqtt": {
            "username": "hub-a.alt",
            "password": "p2",
            "fallback": {"username": "hub-a", "password": "p1"},
        }
    }
    assert redacted(wire)["mqtt"] == {"username": "hub-a.alt", "password": None}
