"""``SessionService``: logins, vouchers and accounting over the hub's SQLite file.

The decisions are in the pure modules (vouchers, quota, accounting); this layer reads rows,
calls them and writes the outcome in one transaction per operation. It never touches the
kernel: it returns grants (``grants``/``grant_for``) and actions (``account``) that the
agent hands to enforcement.

Rules a reader may not guess:

* A voucher has ``devices_per_voucher`` device slots. The data quota is per device slot
  (so the kernel can cut each device exactly); the time quota runs from the voucher's first
  use, for all its devices. A device that comes back (logout, idle, reboot) resumes its own
  slot with the bytes it already used.
* A central code seen for the first time is verified offline (HMAC under
  ``trust.voucher_secret``) and then stored like a local one; each device redemption is
  queued for the centre (``pending_redemptions``/``mark_reported``).
* ``Grant.quota_bytes`` is the remaining data *when the kernel state was granted*
  (``granted_used``), so it stays the same pass after pass and enforcement does not rebuild
  the device; it changes only together with an Action (throttle, regrant).
* Free tier: bytes per device per local day (``usage_daily.free_bytes``); at midnight a live
  free session is re-granted with the fresh allowance.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

import sqlite_utils

from hub_agent.api.changes import ALL, ChangeFeed
from hub_agent.api.protocol import DeviceView, EndReason, SessionView, UsedElsewhere
from hub_agent.config import HubConfig, normalise_mac
from hub_agent.enforce.discovery import Device
from hub_agent.enforce.model import Counters, DesiredState, Grant
from hub_agent.roaming import Asked
from hub_agent.sessions import attempts, quota
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.accounting import DayDelta, fold, merge_days
from hub_agent.sessions.accounts import ACCOUNT, Terms
from hub_agent.sessions.quota import Limits, Usage, Verdict
from hub_agent.sessions.vouchers import (
    new_local_code,
    normalise_code,
    verify_central_code,
)
from hub_agent.store import transaction

FREE = "free"
RECENT_S = 24 * 3600  # an ended session is still shown (with its reason) this long

LoginResult = tuple[SessionView | None, str | None]


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


def device_pseudonym(secret: bytes, mac: str) -> str:
    """A stable per-deployment pseudonym for a device: the centre can count distinct
    devices across hubs without ever learning their MAC addresses."""
    return hmac.new(secret, b"device\0" + mac.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Redemption:
    """One device's redemption of a central code, as reported to the centre.

    ``mac`` is the MAC on the hub; in events and at the centre it is the pseudonym."""

    hub_id: str
    code: str
    mac: str
    at: float
    plan_id: str

    def as_event(self, secret: bytes) -> dict[str, object]:
        """Payload fields for a ``voucher_redeemed`` event on ``relais/hubs/{id}/events``."""
        return {
            "type": "voucher_redeemed",
            "code": self.code,
            "device": device_pseudonym(secret, self.mac),
            "at": self.at,
            "plan_id": self.plan_id,
        }

    @classmethod
    def from_event(cls, hub_id: str, payload: Mapping[str, object]) -> Redemption:
        """The centre's side of ``as_event`` (ValueError naming a missing/bad field)."""
        try:
            at = payload["at"]
            if not isinstance(at, int | float):
                raise ValueError("at: expected a timestamp")
            return cls(
                hub_id, str(payload["code"]), str(payload["device"]), float(at),
                str(payload["plan_id"]),
            )  # fmt: skip
        except KeyError as e:
            raise ValueError(f"voucher_redeemed.{e.args[0]}: missing") from None


_COLS = (
    "id, mac, plan_id, code, state, started_at, first_use, day, bytes_up, bytes_down, "
    "granted_used, last_kernel_up, last_kernel_down, last_activity, ended_at, ended_reason, "
    "terms"
)


@dataclass
class _Row:
    id: int
    mac: str
    plan_id: str
    code: str | None
    state: str
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


class SessionService:
    def __init__(self, config: HubConfig, db: sqlite_utils.Database) -> None:
        self.config = config
        self.db = db
        self.conn: sqlite3.Connection = db.conn
        self.changes = ChangeFeed()  # devices whose session changed: the portal's cache

    # --- config ---------------------------------------------------------------------------
    def update_config(self, config: HubConfig, now: float | None = None) -> list[Action]:
        """Apply a new config to live sessions; return what enforcement must change.

        A session whose plan terms changed (quota, rates) is re-granted with what is left
        under the new terms, counted from now; one whose plan was removed ends
        (``caretaker``). Other sessions keep their kernel state untouched."""
        now = time.time() if now is None else now
        self.changes.bump([ALL])  # plans, names, banners: every page may read differently
        day = quota.local_day(now, self.tz)
        live = self._session_rows("state != 'ended'")
        before = {s.plan_id: self._terms(s.plan_id) for s in live}
        self.config = config
        actions: list[Action] = []
        with transaction(self.db):
            for s in live:
                if s.terms is not None:
                    continue  # an account session's terms are its own, not the config's
                terms = self._terms(s.plan_id)
                if terms is None:
                    self._end(s.mac, "caretaker", now)
                    actions.append(Action("deauthorize", s.mac, reason="caretaker"))
                elif terms != before[s.plan_id]:
                    s.granted_used = self._used(s, day)
                    self.conn.execute(
                        "UPDATE sessions SET granted_used = ? WHERE id = ?", (s.granted_used, s.id)
                    )
                    actions.append(Action("regrant", s.mac, grant=self._grant(s)))
        return actions

    def _terms(self, plan_id: str) -> tuple[object, ...] | None:
        """What a plan's grants depend on (None: no such plan)."""
        limits = self._limits(plan_id)
        if limits is None:
            return None
        if plan_id == FREE:
            return (limits, self.config.free_tier.down_kbit, self.config.free_tier.up_kbit)
        p = self.config.plan(plan_id)
        return (limits, p.down_kbit, p.up_kbit, p.throttle_kbit)

    @property
    def tz(self) -> str:
        return self.config.hub.timezone

    def _limits(self, plan_id: str) -> Limits | None:
        if plan_id == FREE:
            return quota.free_limits(self.config.free_tier)
        try:
            return quota.plan_limits(self.config.plan(plan_id))
        except KeyError:
            return None  # the plan was removed from the config

    def _limits_of(self, s: _Row) -> Limits | None:
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

    def _session_rows(self, where: str, params: Iterable[object] = ()) -> list[_Row]:
        cur = self.conn.execute(f"SELECT {_COLS} FROM sessions WHERE {where}", tuple(params))
        return [_Row(*r) for r in cur.fetchall()]

    def _live(self, mac: str) -> _Row | None:
        rows = self._session_rows("mac = ? AND state != 'ended'", [mac])
        return rows[0] if rows else None

    def _free_today(self, mac: str, day: str) -> int:
        row = self._one("SELECT free_bytes FROM usage_daily WHERE mac = ? AND day = ?", [mac, day])
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def _voucher_first_use(self, code: str | None) -> float | None:
        if code is None:
            return None
        row = self._one("SELECT first_use FROM vouchers WHERE code = ?", [code])
        return None if row is None or row[0] is None else float(row[0])  # type: ignore[arg-type]

    def _used(self, s: _Row, day: str) -> int:
        """Bytes charged against the session's quota: today's free bytes, or the slot's."""
        return self._free_today(s.mac, day) if s.free else s.total

    def is_blocked(self, mac: str) -> bool:
        row = self._one("SELECT blocked FROM devices WHERE mac = ?", [normalise_mac(mac)])
        return bool(row and row[0])

    def _ip(self, mac: str) -> str | None:
        row = self._one("SELECT ip FROM devices WHERE mac = ?", [mac])
        return None if row is None or row[0] is None else str(row[0])

    # --- devices --------------------------------------------------------------------------
    def seen(self, mac: str, ip: str | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.conn.execute(
            "INSERT INTO devices (mac, ip, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT(mac) DO UPDATE SET ip = coalesce(excluded.ip, ip), "
            "last_seen = excluded.last_seen",
            (normalise_mac(mac), ip, now),
        )

    def record_devices(self, devices: Iterable[Device]) -> int:
        """Store what discovery learnt (address, DHCP hostname, last seen), in one
        transaction; a hostname or last-seen is never replaced by an empty or older one."""
        rows = [(d.mac, d.ip, d.hostname, d.last_seen or None) for d in devices]
        if not rows:
            return 0
        with transaction(self.db):
            self.conn.executemany(
                "INSERT INTO devices (mac, ip, hostname, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET ip = coalesce(excluded.ip, ip), "
                "hostname = coalesce(excluded.hostname, hostname), "
                "last_seen = CASE WHEN excluded.last_seen IS NULL THEN last_seen "
                "ELSE max(excluded.last_seen, coalesce(last_seen, 0)) END",
                rows,
            )
        return len(rows)

    def block(self, mac: str, blocked: bool, now: float | None = None) -> None:
        now = time.time() if now is None else now
        mac = normalise_mac(mac)
        with transaction(self.db):
            self.conn.execute(
                "INSERT INTO devices (mac, blocked) VALUES (?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET blocked = excluded.blocked",
                (mac, int(blocked)),
            )
            if blocked:
                self._end(mac, "blocked", now)
            self.changes.bump([mac])

    # --- login / logout -------------------------------------------------------------------
    def login(
        self,
        mac: str,
        ip: str | None,
        method: str,
        code: str | None,
        now: float | None = None,
        enforce: Callable[[Grant], None] | None = None,
        account: Terms | None = None,
        balance: Asked | None = None,
    ) -> LoginResult:
        """Start (or resume) the device's session; ``(view, None)`` or ``(None, error)``
        where error is a ``protocol.LoginError`` code.

        ``enforce(grant)`` puts the new session in the kernel *inside* the transaction: if
        it raises, nothing of the login is kept (the code stays unused). A crash after the
        kernel change but before the commit leaves a kernel device the database does not
        know, which the reconcile on start removes; so code, session and kernel agree
        after a crash at any instruction. ``balance``: a central code's roaming decision
        (hub_agent/roaming.py), stored with the login, capping the slot here."""
        now = time.time() if now is None else now
        mac = normalise_mac(mac)
        methods = self.config.portal.login_methods
        if method not in methods or (method == FREE and not self.config.free_tier.enabled):
            return None, "method_disabled"
        with transaction(self.db):
            self.seen(mac, ip, now)
            if self.is_blocked(mac):
                return None, "blocked"
            if self.attempts(mac, now).retry_after:
                return None, "rate_limited"
            if method == FREE:
                result = self._login_free(mac, now)
            elif method == ACCOUNT:  # ``account``: what RADIUS accepted; None: rejected
                result = self._login_account(mac, account, now)
            elif balance is not None:  # a central code, with what the centre said
                d = sroaming.decide_here(self.conn, balance, now)
                result = (None, d.error) if d.error else self._login_voucher(mac, balance.code, now)
                if result[0] is not None and sroaming.earlier_first_use(self.conn, d):
                    result = self.session_view(mac, now), None
            else:
                result = self._login_voucher(mac, code or "", now)
            if result[1] in attempts.WRONG_CODE:
                attempts.record_failure(self.conn, mac, now, self.config.portal.lockout_seconds)
            elif result[0] is not None:
                self.changes.bump([mac])
                attempts.clear(self.conn, mac)
                if enforce is not None:
                    grant = self.grant_for(mac, now)
                    if grant is not None:
                        enforce(grant)
            return result

    def device_codes(self, mac: str, limit: int = 20) -> list[str]:
        """The codes this device has logged in with, newest first (it knows them already:
        a typo hint may use them without telling anyone which codes exist)."""
        rows = self.conn.execute(
            "SELECT code FROM sessions WHERE mac = ? AND code IS NOT NULL "
            "GROUP BY code ORDER BY MAX(id) DESC LIMIT ?",
            (normalise_mac(mac), limit),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def attempts(self, mac: str, now: float | None = None) -> attempts.Verdict:
        """Whether the device may try a code now, and how many wrong ones it has left."""
        now = time.time() if now is None else now
        window = self.config.portal.lockout_seconds
        done = attempts.failures(self.conn, normalise_mac(mac), now - window)
        return attempts.verdict(done, now, self.config.portal.login_attempts, window)

    def _login_free(self, mac: str, now: float) -> LoginResult:
        live = self._live(mac)
        if live is not None:  # already online (free or paid): nothing to start
            return self._view(live, now), None
        day = quota.local_day(now, self.tz)
        limits = quota.free_limits(self.config.free_tier)
        used = self._free_today(mac, day)
        assert limits.quota_bytes is not None
        ended_today = self._one(
            "SELECT 1 FROM sessions WHERE mac = ? AND plan_id = ? AND day = ? "
            "AND ended_reason = 'data_quota'",
            [mac, FREE, day],
        )
        if used >= limits.quota_bytes or ended_today:
            return None, "free_used_today"
        last = self._session_rows(
            "mac = ? AND plan_id = ? AND day = ? ORDER BY id DESC LIMIT 1", [mac, FREE, day]
        )
        if last:
            self._reopen(last[0].id, granted_used=used, now=now)
            sid = last[0].id
        else:
            sid = self._insert_session(mac, FREE, None, first_use=now, day=day, now=now, used=used)
        return self._view(self._get(sid), now), None

    def _login_account(self, mac: str, terms: Terms | None, now: float) -> LoginResult:
        if terms is None:
            return None, "bad_account"
        baseline = (0, 0)  # as for a voucher: the device's other session ends, counters kept
        live = self._live(mac)
        if live is not None:
            baseline = (live.last_kernel_up, live.last_kernel_down)
            self._end(mac, "logout", now)
        day = quota.local_day(now, self.tz)
        plan_id = terms.plan_id or ACCOUNT
        sid = self._insert_session(mac, plan_id, None, first_use=now, day=day, now=now,
                                   baseline=baseline)  # fmt: skip
        self.conn.execute("UPDATE sessions SET terms = ? WHERE id = ?", (terms.dump(), sid))
        return self._view(self._get(sid), now), None

    def _login_voucher(self, mac: str, text: str, now: float) -> LoginResult:
        code = normalise_code(text)
        if code is None:
            return None, "unknown_code"
        live = self._live(mac)
        if live is not None and live.code == code:
            return self._view(live, now), None  # a second tap on "connect"
        voucher = self._one(
            "SELECT plan_id, devices_max, status, expires_at, first_use FROM vouchers "
            "WHERE code = ?",
            [code],
        )
        if voucher is None:
            voucher = self._adopt_central(code, now)
            if voucher is None:
                return None, "unknown_code"
        plan_id, devices_max, status, expires_at, first_use = voucher
        plan_id = str(plan_id)
        if status == "revoked":
            return None, "revoked"
        limits = sroaming.limits_for(self.conn, code, self._limits(plan_id))
        if limits is None:
            return None, "revoked"  # its plan is no longer sold on this hub
        redeemed = self._one("SELECT 1 FROM redemptions WHERE code = ? AND mac = ?", [code, mac])
        if not redeemed:
            if status == "expired" or (expires_at is not None and now >= float(expires_at)):  # type: ignore[arg-type]
                return None, "expired"
            n = self._one("SELECT count(*) FROM redemptions WHERE code = ?", [code])
            if status == "used_up" or (n and int(n[0]) >= int(devices_max)):  # type: ignore[call-overload]
                return None, "used_up"
        start = now if first_use is None else float(first_use)  # type: ignore[arg-type]
        if quota.time_exhausted(limits, Usage(0, start, now), now):
            self.conn.execute("UPDATE vouchers SET status = 'expired' WHERE code = ?", (code,))
            return None, "expired"
        slot = self._session_rows("code = ? AND mac = ? ORDER BY id DESC LIMIT 1", [code, mac])
        if slot:
            prev = slot[0]
            if prev.ended_reason == "data_quota" or (
                quota.data_exhausted(limits, Usage(prev.total, start, now))
                and not limits.throttle_on_data
            ):
                return None, "used_up"
        # The device moves to this voucher: its other session (free or another code) ends.
        # Its kernel state is updated in place (counters kept), so the new session starts
        # from the same kernel baseline; a device with no live session gets a fresh one.
        baseline = (0, 0)
        if live is not None:
            baseline = (live.last_kernel_up, live.last_kernel_down)
            self._end(mac, "logout", now)
        if not redeemed:
            self.conn.execute(
                "INSERT INTO redemptions (code, mac, at) VALUES (?, ?, ?)", (code, mac, now)
            )
        self.conn.execute(
            "UPDATE vouchers SET status = 'active', first_use = coalesce(first_use, ?) "
            "WHERE code = ?",
            (now, code),
        )
        day = quota.local_day(now, self.tz)
        if slot:
            prev = slot[0]
            throttled = quota.data_exhausted(limits, Usage(prev.total, start, now))
            self._reopen(
                prev.id, granted_used=prev.total, now=now, throttled=throttled, baseline=baseline
            )
            sid = prev.id
        else:
            sid = self._insert_session(
                mac, plan_id, code, first_use=start, day=day, now=now, baseline=baseline
            )
        return self._view(self._get(sid), now), None

    def _adopt_central(self, code: str, now: float) -> tuple[object, ...] | None:
        """Verify an unseen code as a central one; store it so later logins find it."""
        secret = self._secret()
        if secret is None:
            return None
        found = verify_central_code(secret, code, [p.id for p in self.config.plans])
        if found is None:
            return None
        plan = self.config.plan(found.plan_id)
        expires_at = found.expires_at(self.tz)
        self.conn.execute(
            "INSERT INTO vouchers (code, plan_id, kind, devices_max, status, issued_at, "
            "expires_at) VALUES (?, ?, 'central', ?, 'unused', ?, ?)",
            (code, plan.id, plan.devices_per_voucher, now, expires_at),
        )
        return (plan.id, plan.devices_per_voucher, "unused", expires_at, None)

    def _insert_session(
        self,
        mac: str,
        plan_id: str,
        code: str | None,
        *,
        first_use: float,
        day: str,
        now: float,
        used: int = 0,
        baseline: tuple[int, int] = (0, 0),
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO sessions (mac, plan_id, code, state, started_at, first_use, day, "
            "granted_used, last_kernel_up, last_kernel_down, last_activity) "
            "VALUES (?, ?, ?, 'authorised', ?, ?, ?, ?, ?, ?, ?)",
            (mac, plan_id, code, now, first_use, day, used, *baseline, now),
        )
        return int(cur.lastrowid or 0)

    def _reopen(
        self,
        sid: int,
        *,
        granted_used: int,
        now: float,
        throttled: bool = False,
        baseline: tuple[int, int] = (0, 0),
    ) -> None:
        # The handler authorises the device next: fresh kernel counters (baseline 0) unless
        # the device was live under another session (its kernel state is updated in place).
        self.conn.execute(
            "UPDATE sessions SET state = ?, ended_at = NULL, ended_reason = NULL, "
            "granted_used = ?, last_kernel_up = ?, last_kernel_down = ?, last_activity = ?, "
            "day = ? WHERE id = ?",
            (
                "throttled" if throttled else "authorised",
                granted_used,
                *baseline,
                now,
                quota.local_day(now, self.tz),
                sid,
            ),
        )

    def _get(self, sid: int) -> _Row:
        return self._session_rows("id = ?", [sid])[0]

    def logout(self, mac: str, now: float | None = None) -> None:
        self.end(mac, "logout", now)

    def end(self, mac: str, reason: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with transaction(self.db):
            self._end(normalise_mac(mac), reason, now)

    def _end(self, mac: str, reason: str, now: float) -> None:
        self.changes.bump([mac])
        self.conn.execute(
            "UPDATE sessions SET state = 'ended', ended_at = ?, ended_reason = ? "
            "WHERE mac = ? AND state != 'ended'",
            (now, reason, mac),
        )

    def revoke(self, code: str, now: float | None = None) -> bool:
        """Revoke a voucher (local, or a central one even before this hub saw it)."""
        now = time.time() if now is None else now
        c = normalise_code(code)
        if c is None:
            return False
        with transaction(self.db):
            row = self._one("SELECT plan_id FROM vouchers WHERE code = ?", [c])
            if row is None and self._adopt_central(c, now) is None:
                return False
            self.conn.execute("UPDATE vouchers SET status = 'revoked' WHERE code = ?", (c,))
            for (mac,) in self.conn.execute(
                "SELECT mac FROM sessions WHERE code = ? AND state != 'ended'", (c,)
            ).fetchall():
                self._end(str(mac), "caretaker", now)
        return True

    # --- vouchers -------------------------------------------------------------------------
    def issue_local_vouchers(
        self,
        plan_id: str,
        count: int,
        now: float | None = None,
        expires_at: float | None = None,
    ) -> list[str]:
        """``count`` new random codes for ``plan_id`` (KeyError if the plan is unknown)."""
        now = time.time() if now is None else now
        plan = self.config.plan(plan_id)
        if not 1 <= count <= 10_000:
            raise ValueError(f"count: {count} outside 1..10000")
        secret = self._secret()
        plan_ids = [p.id for p in self.config.plans]
        codes: list[str] = []
        with transaction(self.db):
            while len(codes) < count:
                code = new_local_code()
                if secret is not None and verify_central_code(secret, code, plan_ids):
                    continue  # astronomically rare; keep the two kinds apart anyway
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO vouchers (code, plan_id, kind, devices_max, status, "
                    "issued_at, expires_at) VALUES (?, ?, 'local', ?, 'unused', ?, ?)",
                    (code, plan.id, plan.devices_per_voucher, now, expires_at),
                )
                if cur.rowcount == 1:
                    codes.append(code)
        return codes

    def voucher_status(self, code: str) -> str | None:
        c = normalise_code(code)
        row = None if c is None else self._one("SELECT status FROM vouchers WHERE code = ?", [c])
        return None if row is None else str(row[0])

    def pending_redemptions(self, limit: int = 1000) -> list[Redemption]:
        rows = self.conn.execute(
            "SELECT r.code, r.mac, r.at, v.plan_id FROM redemptions r "
            "JOIN vouchers v ON v.code = r.code "
            "WHERE r.reported = 0 AND v.kind = 'central' ORDER BY r.at LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Redemption(self.config.hub.id, str(c), str(m), float(a), str(p)) for c, m, a, p in rows
        ]

    def mark_reported(self, redemptions: Iterable[Redemption]) -> None:
        with transaction(self.db):
            self.conn.executemany(
                "UPDATE redemptions SET reported = 1 WHERE code = ? AND mac = ?",
                [(r.code, r.mac) for r in redemptions],
            )

    def apply_roaming(self, asked: Asked, now: float | None = None) -> list[Action]:
        """A later answer for a code (the centre reachable again): store it and re-grant
        the code's live sessions with what is left under it."""
        now = time.time() if now is None else now
        actions: list[Action] = []
        with transaction(self.db):
            sroaming.decide_here(self.conn, asked, now)
            for s in self._session_rows("code = ? AND state != 'ended'", [asked.code]):
                s.granted_used = s.total
                self.conn.execute(
                    "UPDATE sessions SET granted_used = ? WHERE id = ?", (s.total, s.id)
                )
                actions.append(Action("regrant", s.mac, grant=self._grant(s)))
        return actions

    # --- accounting -----------------------------------------------------------------------
    def note_kernel_reset(self, macs: Iterable[str], now: float | None = None) -> None:
        """Enforcement is about to (re)create these devices' kernel state from ``grants``:
        counters start from 0 and the quota from what is left now."""
        day = quota.local_day(time.time() if now is None else now, self.tz)
        with transaction(self.db):
            for mac in macs:
                live = self._live(normalise_mac(mac))
                if live is not None:
                    self.conn.execute(
                        "UPDATE sessions SET last_kernel_up = 0, last_kernel_down = 0, "
                        "granted_used = ? WHERE id = ?",
                        (self._used(live, day), live.id),
                    )

    def account(self, counters: Mapping[str, Counters], now: float | None = None) -> list[Action]:
        """Fold a kernel sample into usage, decide each live session, persist, and return
        what enforcement must change. One transaction: a kill -9 keeps all or nothing."""
        now = time.time() if now is None else now
        today = quota.local_day(now, self.tz)
        actions: list[Action] = []
        with transaction(self.db):
            live = self._session_rows("state != 'ended'")
            free_today = dict(
                self.conn.execute(
                    "SELECT mac, free_bytes FROM usage_daily WHERE day = ?", (today,)
                ).fetchall()
            )
            firsts = dict(
                self.conn.execute(
                    "SELECT v.code, v.first_use FROM vouchers v JOIN sessions s ON s.code = v.code "
                    "WHERE s.state != 'ended'"
                ).fetchall()
            )
            days: list[DayDelta] = []
            updates: list[_Row] = []
            ended: list[_Row] = []
            for s in live:
                before = replace(s)
                c = counters.get(s.mac)
                reset = False
                if c is not None:
                    f = fold(s.last_kernel_up, s.last_kernel_down, c.up_bytes, c.down_bytes)
                    reset = f.reset
                    s.bytes_up += f.delta_up
                    s.bytes_down += f.delta_down
                    s.last_kernel_up, s.last_kernel_down = f.last_up, f.last_down
                    if f.delta or c.active:
                        s.last_activity = now
                    if f.delta:
                        free = f.delta if s.free else 0
                        days.append(DayDelta(s.mac, today, f.delta, free))
                        if s.free:
                            free_today[s.mac] = free_today.get(s.mac, 0) + f.delta
                action = self._decide(s, c, reset, today, free_today, firsts, now)
                if action is not None:
                    self.changes.bump([s.mac])
                    actions.append(action)
                    if action.kind == "deauthorize":
                        ended.append(s)
                if s != before:
                    updates.append(s)
            self.conn.executemany(
                "UPDATE sessions SET state = ?, day = ?, bytes_up = ?, bytes_down = ?, "
                "granted_used = ?, last_kernel_up = ?, last_kernel_down = ?, "
                "last_activity = ?, ended_at = ?, ended_reason = ? WHERE id = ?",
                [
                    (
                        s.state,
                        s.day,
                        s.bytes_up,
                        s.bytes_down,
                        s.granted_used,
                        s.last_kernel_up,
                        s.last_kernel_down,
                        s.last_activity,
                        s.ended_at,
                        s.ended_reason,
                        s.id,
                    )
                    for s in updates
                ],
            )
            self.conn.executemany(
                "INSERT INTO usage_daily (mac, day, bytes, free_bytes) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac, day) DO UPDATE SET bytes = bytes + excluded.bytes, "
                "free_bytes = free_bytes + excluded.free_bytes",
                [(d.mac, d.day, d.bytes, d.free_bytes) for d in merge_days(days)],
            )
            for s in ended:
                self._voucher_after_end(s)
        return actions

    def _decide(
        self,
        s: _Row,
        c: Counters | None,
        reset: bool,
        today: str,
        free_today: Mapping[str, int],
        firsts: Mapping[str, float | None],
        now: float,
    ) -> Action | None:
        """Mutates ``s`` to its new state; returns the action enforcement must take."""
        limits = self._limits_of(s)
        if limits is None:
            return self._finish(s, "caretaker", now)
        rollover = s.free and s.day != today
        used = free_today.get(s.mac, 0) if s.free else s.total
        first = firsts.get(s.code) if s.code else None
        usage = Usage(
            bytes_used=used,
            first_use=s.first_use if first is None else first,
            last_activity=s.last_activity,
            # A tripped kernel quota is believed unless it belongs to yesterday's allowance.
            kernel_exhausted=bool(c and c.quota_exhausted) and not rollover and not reset,
        )
        v = quota.verdict(limits, usage, now)
        if s.state == "throttled":
            v = quota.worst(Verdict("throttle"), v)
        if v.kind == "end":
            return self._finish(s, v.reason or "data_quota", now)
        if v.kind == "throttle":
            if s.state == "throttled":
                return None
            s.state = "throttled"
            s.granted_used = used
            return Action("throttle", s.mac, grant=self._grant(s))
        if rollover or (reset and limits.quota_bytes is not None):
            # Fresh allowance at midnight, or kernel state recreated with a stale quota:
            # grant what is left from now on.
            s.day = today
            s.granted_used = used
            return Action("regrant", s.mac, grant=self._grant(s))
        return None

    def _finish(self, s: _Row, reason: str, now: float) -> Action:
        s.state, s.ended_at, s.ended_reason = "ended", now, reason
        return Action("deauthorize", s.mac, reason=reason)

    def _voucher_after_end(self, s: _Row) -> None:
        if s.code is None:
            return
        if s.ended_reason == "time_quota":
            self.conn.execute("UPDATE vouchers SET status = 'expired' WHERE code = ?", (s.code,))
        elif s.ended_reason == "data_quota":
            # used up once every slot is taken and every slot's data is gone
            self.conn.execute(
                "UPDATE vouchers SET status = 'used_up' WHERE code = ? AND status = 'active' "
                "AND devices_max <= (SELECT count(*) FROM redemptions WHERE code = ?) "
                "AND NOT EXISTS (SELECT 1 FROM sessions WHERE code = ? AND "
                "(ended_reason IS NULL OR ended_reason != 'data_quota'))",
                (s.code, s.code, s.code),
            )

    # --- what enforcement and the portal see ----------------------------------------------
    def _grant(self, s: _Row, ip: str | None = None) -> Grant:
        if s.terms is not None:
            terms = Terms.load(s.terms)
            rates = (terms.down_kbit, terms.up_kbit)
        elif s.free:
            rates = (self.config.free_tier.down_kbit, self.config.free_tier.up_kbit)
        else:
            plan = self.config.plan(s.plan_id)
            rates = (plan.down_kbit, plan.up_kbit)
            if s.state == "throttled":
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

    def grant_for(self, mac: str, now: float | None = None) -> Grant | None:
        live = self._live(normalise_mac(mac))
        if live is None or self._limits_of(live) is None:
            return None
        return self._grant(live)

    def grants(self, now: float | None = None) -> DesiredState:
        blocked = frozenset(
            str(m) for (m,) in self.conn.execute("SELECT mac FROM devices WHERE blocked = 1")
        )
        ips = dict(self.conn.execute("SELECT mac, ip FROM devices").fetchall())
        out: dict[str, Grant] = {}
        wan = self.config.network.wan
        for d in self.config.staff.devices:
            if d.mac not in blocked:
                out[d.mac] = Grant(
                    mac=d.mac, ip=ips.get(d.mac), down_kbit=wan.down_kbit,
                    up_kbit=wan.up_kbit, staff=True,
                )  # fmt: skip
        for s in self._session_rows("state != 'ended'"):
            if s.mac in blocked or s.mac in out or self._limits_of(s) is None:
                continue
            out[s.mac] = self._grant(s, ips.get(s.mac))
        return DesiredState(grants=tuple(out[m] for m in sorted(out)), blocked_macs=blocked)

    def _view(self, s: _Row, now: float) -> SessionView:
        limits = self._limits_of(s)
        if s.terms is not None:
            name = Terms.load(s.terms).name()
        elif s.free:
            name = {"fr": "Accès gratuit", "en": "Free access"}
        else:
            try:
                name = dict(self.config.plan(s.plan_id).name)
            except KeyError:
                name = {"fr": s.plan_id, "en": s.plan_id}
        grant = self._grant(s) if limits is not None and s.state != "ended" else None
        used = self._used(s, quota.local_day(now, self.tz)) if s.free else s.total
        first = self._voucher_first_use(s.code) or s.first_use
        state: Literal["authorised", "throttled", "expired", "ended"]
        reason: EndReason | None = None
        if s.state == "ended":
            state = "expired" if s.ended_reason in ("data_quota", "time_quota") else "ended"
            if s.ended_reason in ("data_quota", "time_quota", "idle", "logout", "caretaker",
                                  "blocked"):  # fmt: skip
                reason = s.ended_reason  # type: ignore[assignment]
        else:
            state = "throttled" if s.state == "throttled" else "authorised"
        return SessionView(
            state=state,
            plan_id=s.plan_id,
            plan_name=name,
            down_kbit=grant.down_kbit if grant else 0,
            up_kbit=grant.up_kbit if grant else 0,
            bytes_used=used,
            bytes_remaining=None if limits is None else quota.bytes_remaining(limits, used),
            seconds_remaining=None
            if limits is None
            else quota.seconds_remaining(limits, first, now),
            started_at=s.started_at,
            ended_reason=reason,
            **self._roaming_view(s.code),
        )

    def _roaming_view(self, code: str | None) -> dict[str, object]:
        w = sroaming.where(self.conn, code)
        if w is None:
            return {}
        used = [UsedElsewhere(hub=u.name, bytes=u.bytes) for u in w.used_at]
        return {"used_elsewhere": used, "balance_offline": w.source == "offline"}

    def session_view(self, mac: str, now: float | None = None) -> SessionView | None:
        """The live session, or the last one if it ended in the past day (so the portal
        can say why), else None."""
        now = time.time() if now is None else now
        rows = self._session_rows("mac = ? ORDER BY id DESC LIMIT 1", [normalise_mac(mac)])
        if not rows:
            return None
        s = rows[0]
        if s.state == "ended" and (s.ended_at or 0) < now - RECENT_S:
            return None
        return self._view(s, now)

    def device_views(self, now: float | None = None) -> list[DeviceView]:
        now = time.time() if now is None else now
        staff = {d.mac for d in self.config.staff.devices}
        rows = {
            str(r[0]): r
            for r in self.conn.execute(
                "SELECT mac, ip, hostname, last_seen, blocked FROM devices"
            ).fetchall()
        }
        out = []
        for mac in sorted(set(rows) | staff):
            r = rows.get(mac)
            out.append(
                DeviceView(
                    mac=mac,
                    ip=r[1] if r else None,
                    hostname=r[2] if r else None,
                    last_seen=r[3] if r else None,
                    blocked=bool(r[4]) if r else False,
                    staff=mac in staff,
                    session=self.session_view(mac, now),
                )
            )
        return out
