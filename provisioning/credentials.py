"""A hub's broker credentials and their rotation, as data (pure; ``enroll`` applies).

Mosquitto's password file holds one password per user, so a hub that must keep working
with its old password while it takes the new one needs two broker users: the slots
``{hub_id}`` and ``{hub_id}.alt`` (hub ids never contain a dot). A rotation writes the new
password into the slot the hub does not use; the pushed config names the new user and
keeps the old one as ``mqtt.fallback``; once the hub says (retained ``state``) that it is
connected as the new user, the old user is retired. The ACL gives both slots the same
topics.

In ``secrets/<hub_id>.json``: ``mqtt_username``, ``mqtt_password`` and, while a rotation is
pending, ``previous: {username, password}``. Files written before rotations existed have
only ``mqtt_password`` (user ``{hub_id}``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


def slot_users(hub_id: str) -> tuple[str, str]:
    return hub_id, f"{hub_id}.alt"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    previous: tuple[str, str] | None = None  # (username, password) until retired

    def secret(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mqtt_username": self.username, "mqtt_password": self.password}
        if self.previous is not None:
            out["previous"] = {"username": self.previous[0], "password": self.previous[1]}
        return out

    def mqtt_fields(self) -> dict[str, Any]:
        """The config's ``mqtt`` credential fields (``hubdoc.forced_fields``)."""
        out: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.previous is not None:
            out["fallback"] = {"username": self.previous[0], "password": self.previous[1]}
        return out

    def retired(self) -> Credentials:
        return replace(self, previous=None)


def from_secret(hub_id: str, secret: dict[str, Any] | None) -> Credentials | None:
    if not secret or not isinstance(secret.get("mqtt_password"), str):
        return None
    prev = secret.get("previous")
    previous = None
    if isinstance(prev, dict) and isinstance(prev.get("username"), str):
        previous = (str(prev["username"]), str(prev.get("password", "")))
    return Credentials(
        str(secret.get("mqtt_username") or hub_id), secret["mqtt_password"], previous
    )


def rotated(hub_id: str, current: Credentials | None, password: str) -> Credentials:
    """The credentials after a rotation to ``password``. The new password goes into the
    slot the hub does not use; the current user becomes the fallback. While a rotation is
    still pending (the old user not retired: the hub may not have taken the new one), the
    pending slot is rewritten and the fallback stays the user the hub surely has."""
    first, alt = slot_users(hub_id)
    if current is None:
        return Credentials(first, password)
    if current.previous is not None:
        return Credentials(current.username, password, current.previous)
    other = alt if current.username == first else first
    return Credentials(other, password, (current.username, current.password))


def adopted(creds: Credentials, state: dict[str, Any]) -> bool:
    """True when a hub's ``state`` message says it is connected as the new user."""
    return (
        state.get("online") is True
        and state.get("user") == creds.username
        and state.get("credential") == "new"
    )
