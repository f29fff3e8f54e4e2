"""What the session modules share: the session row, its limits and grant, and its end.

``Core`` holds the config and the SQLite connection; ``login``, ``metering`` (the
accounting pass) and ``views`` build on it, and ``service.SessionService`` joins them.
Every change of a row's ``state`` goes through ``states.step`` (here, in ``login`` and in
``metering``), so the transition table is the one place that says what may happen.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import sqlite_utils

from hub_agent.api.changes import ChangeFeed
from hub_agent.config import HubConfig, normalise_mac
from hub_agent.enforce.model import Grant
from hub_agent.sessions import quota
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.accounts import Terms
from hub_agent.sessions.quota import Limits
from hub_agent.sessions.states import THROTTLED, State, step

FREE = "free"


@dataclass(frozen=True)
class Action:
    """What enforcement must do after an accounting pass.

    ``deauthorize``: remove the device (``reason`` says why); ``throttle``: re-grant it at
    the plan's trickle rate, no quota; ``regrant``: re-grant with a fresh ``quota_bytes``
    (kernel state was recreated, or the free allowance reset at midnight)."""

    kind: Literal["deauthorize", "throttle", "regrant"]
    mac: str
    reason: str | None = None
    grant: Grant | None = None


COLS = (
    "id, mac, plan_id, code, state, started_at, first_use, day, bytes_up, bytes_down, "
    "granted_used, last_kernel_up, last_kernel_down, last_activity, ended_at, ended_reason, "
    "terms"
)


@dataclass
class Row:
    """One row of ``sessions`` (``COLS``, in order)."""

    id: int
    mac: str
    plan_id: str
    code: str | None
    state: State
    started_at: float
    first_use: float
    day: str
    bytes_up: int
    bytes_down: int
    granted_used: int
    last_kernel_up: int
    last_kernel_down: int
    last_activity: float
    ended_at: float | None
    ended_reason: str | None
    terms: str | None = None  # an account session's own terms (sessions/accounts.py)

    @property
    def free(self) -> bool:
        return self.plan_id == FREE

    @property
    def total(self) -> int:
        return self.bytes_up + self.bytes_down


class Core:
    def __init__(self, config: HubConfig, db: sqlite_utils.Database) -> None:
        self.config = config
        self.db = db
        self.conn: sqlite3.Connection = db.conn
        self.changes = ChangeFeed()  # devices whose session changed: the portal's cache

    @property
    def tz(self) -> str:
        return self.config.hub.timezone

    # --- plans and limits -----------------------------------------------------------------
    def _terms(self, plan_id: str) -> tuple[object, ...] | None:
        """What a plan's grants depend on (None: no such plan)."""
        limits = self._limits(plan_id)
        if limits is None:
            return None
        if plan_id == FREE:
            return (limits, self.config.free_tier.down_kbit, self.config.free_tier.up_kbit)
        p = self.config.plan(plan_id)
        return (limits, p.down_kbit, p.up_kbit, p.throttle_kbit)

    def _limits(self, plan_id: str) -> Limits | None:
        if plan_id == FREE:
            return quota.free_limits(self.config.free_tier)
        try:
            return quota.plan_limits(self.config.plan(plan_id))
        except KeyError:
            return None  # the plan was removed from the config

    def _limits_of(self, s: Row) -> Limits | None:
        if s.terms is not None:
            return Terms.load(s.terms).limits()
        return sroaming.limits_for(self.conn, s.code, self._limits(s.plan_id))

    def _secret(self) -> bytes | None:
        s = self.config.trust.voucher_secret
        return None if s is None else s.get_secret_value().encode()

    # --- small queries --------------------------------------------------------------------
    def _one(self, sql: str, params: Iterable[object] = ()) -> tuple[object, ...] | None:
        row = self.conn.execute(sql, tuple(params)).fetchone()
        return None if row is None else tuple(row)

    def _session_rows(self, where: str, params: Iterable[object] = ()) -> list[Row]:
        cur = self.conn.execute(f"SELECT {COLS} FROM sessions WHERE {where}", tuple(params))
        return [Row(*r) for r in cur.fetchall()]

    def _live(self, mac: str) -> Row | None:
        rows = self._session_rows("mac = ? AND state != 'ended'", [mac])
        return rows[0] if rows else None

    def _get(self, sid: int) -> Row:
        return self._session_rows("id = ?", [sid])[0]

    def _free_today(self, mac: str, day: str) -> int:
        row = self._one("SELECT free_bytes FROM usage_daily WHERE mac = ? AND day = ?", [mac, day])
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def _voucher_first_use(self, code: str | None) -> float | None:
        if code is None:
            return None
        row = self._one("SELECT first_use FROM vouchers WHERE code = ?", [code])
        return None if row is None or row[0] is None else float(row[0])  # type: ignore[arg-type]

    def _used(self, s: Row, day: str) -> int:
        """Bytes charged against the session's quota: today's free bytes, or the slot's."""
        return self._free_today(s.mac, day) if s.free else s.total

    def is_blocked(self, mac: str) -> bool:
        row = self._one("SELECT blocked FROM devices WHERE mac = ?", [normalise_mac(mac)])
        return bool(row and row[0])

    def _ip(self, mac: str) -> str | None:
        row = self._one("SELECT ip FROM devices WHERE mac = ?", [mac])
        return None if row is None or row[0] is None else str(row[0])

    def seen(self, mac: str, ip: str | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if ip is not None and ":" in ip:
            # devices.ip is the IPv4 address nft pairs with the MAC; IPv6 is authorised by
            # MAC alone, so a device asking from its IPv6 address keeps its IPv4 one here
            ip = None
        self.conn.execute(
            "INSERT INTO devices (mac, ip, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT(mac) DO UPDATE SET ip = coalesce(excluded.ip, ip), "
            "last_seen = excluded.last_seen",
            (normalise_mac(mac), ip, now),
        )

    def forget_addresses_outside(self, net: ipaddress.IPv4Network) -> None:
        """The LAN was renumbered: an IPv4 address outside ``net`` is no one's any more, so
        its device is authorised by MAC alone (nft ``auth4m``) until it is seen again."""
        rows = self.conn.execute("SELECT mac, ip FROM devices WHERE ip IS NOT NULL").fetchall()
        gone = [
            str(mac)
            for mac, ip in rows
            if (a := ipaddress.ip_address(ip)).version == 4 and a not in net
        ]
        self.conn.executemany("UPDATE devices SET ip = NULL WHERE mac = ?", [(m,) for m in gone])
        self.changes.bump(gone)

    # --- what the kernel gets, and the end of a session -----------------------------------
    def _grant(self, s: Row, ip: str | None = None) -> Grant:
        if s.terms is not None:
            terms = Terms.load(s.terms)
            rates = (terms.down_kbit, terms.up_kbit)
        elif s.free:
            rates = (self.config.free_tier.down_kbit, self.config.free_tier.up_kbit)
        else:
            plan = self.config.plan(s.plan_id)
            rates = (plan.down_kbit, plan.up_kbit)
            if s.state == THROTTLED:
                t = plan.throttle_kbit
                rates = (min(t, plan.down_kbit), min(t, plan.up_kbit))
        limits = self._limits_of(s)
        remaining = None
        if limits is not None and limits.quota_bytes is not None and s.state != "throttled":
            remaining = max(0, limits.quota_bytes - s.granted_used)
        return Grant(
            mac=s.mac,
            ip=ip if ip is not None else self._ip(s.mac),
            down_kbit=rates[0],
            up_kbit=rates[1],
            quota_bytes=remaining,
        )

    def _end(self, mac: str, reason: str, now: float) -> None:
        """End the device's live session, if any (``reason``: one of states.END_REASONS)."""
        self.changes.bump([mac])
        live = self._live(mac)
        if live is None:
            return
        self.conn.execute(
            "UPDATE sessions SET state = ?, ended_at = ?, ended_reason = ? WHERE id = ?",
            (step(live.state, "ended", reason), now, reason, live.id),
        )
