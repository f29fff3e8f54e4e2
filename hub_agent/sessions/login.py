"""Logins: a voucher (local, central, bought with mobile money, roaming), the free tier, or
an account RADIUS accepted, each in one transaction with the kernel change.

Every method enters the session state machine the same way (``states.step``): a new row
goes ``unknown -> authorised``; a device back on its slot goes ``ended -> authorised`` (or
``throttled``, its data gone under a plan that throttles); a device moving to another code
or an account first ends its live session (``logout``), keeping its kernel counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hub_agent.api.protocol import SessionView
from hub_agent.config import normalise_mac
from hub_agent.enforce.model import Grant
from hub_agent.roaming import Asked
from hub_agent.sessions import attempts, quota
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.accounts import ACCOUNT, Terms
from hub_agent.sessions.core import FREE
from hub_agent.sessions.quota import Usage
from hub_agent.sessions.states import UNKNOWN, step
from hub_agent.sessions.views import Views
from hub_agent.sessions.vouchers import normalise_code, verify_central_code
from hub_agent.store import transaction

LoginResult = tuple[SessionView | None, str | None]


class Logins(Views):
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
        record: Callable[[], object] | None = None,
    ) -> LoginResult:
        """Start (or resume) the device's session; ``(view, None)`` or ``(None, error)``
        where error is a ``protocol.LoginError`` code.

        ``enforce(grant)`` puts the new session in the kernel *inside* the transaction: if
        it raises, nothing of the login is kept (the code stays unused). A crash after the
        kernel change but before the commit leaves a kernel device the database does not
        know, which the reconcile on start removes; so code, session and kernel agree
        after a crash at any instruction. ``balance``: a central code's roaming decision
        (hub_agent/roaming.py), stored with the login, capping the slot here. ``record()``
        runs after a successful login's rows, before the kernel change, in the same
        transaction: an account's accounting Start commits with its session, or not at all."""
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
                if record is not None:
                    record()
                if enforce is not None:
                    grant = self.grant_for(mac, now)
                    if grant is not None:
                        enforce(grant)
            return result

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
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (mac, plan_id, code, step(UNKNOWN, "authorised"), now, first_use, day, used,
             *baseline, now),
        )  # fmt: skip
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
        state = step(self._get(sid).state, "throttled" if throttled else "authorised")
        self.conn.execute(
            "UPDATE sessions SET state = ?, ended_at = NULL, ended_reason = NULL, "
            "granted_used = ?, last_kernel_up = ?, last_kernel_down = ?, last_activity = ?, "
            "day = ? WHERE id = ?",
            (state, granted_used, *baseline, now, quota.local_day(now, self.tz), sid),
        )
