"""The accounting pass, and the other changes of live sessions' terms.

``account`` folds a kernel sample into usage (``accounting.fold``), asks ``quota.verdict``
about each live session and writes the outcome in one transaction; ``update_config`` and
``apply_roaming`` re-grant live sessions whose terms changed. State changes go through
``states.step``: ``authorised -> throttled`` and ``authorised|throttled -> ended``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace

from hub_agent.api.changes import ALL
from hub_agent.config import HubConfig, normalise_mac
from hub_agent.enforce.model import Counters
from hub_agent.roaming import Asked
from hub_agent.sessions import quota
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.accounting import DayDelta, fold, merge_days
from hub_agent.sessions.core import Action, Core, Row
from hub_agent.sessions.quota import Usage, Verdict
from hub_agent.sessions.states import THROTTLED, step
from hub_agent.store import transaction


class Metering(Core):
    # --- terms changed --------------------------------------------------------------------
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
                self.changes.bump([s.mac])  # the portal's status page: no longer offline
        return actions

    # --- the accounting pass --------------------------------------------------------------
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
            updates: list[Row] = []
            ended: list[Row] = []
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
        s: Row,
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
        if s.state == THROTTLED:
            v = quota.worst(Verdict("throttle"), v)
        if v.kind == "end":
            return self._finish(s, v.reason or "data_quota", now)
        if v.kind == "throttle":
            if s.state == THROTTLED:
                return None
            s.state = step(s.state, "throttled")
            s.granted_used = used
            return Action("throttle", s.mac, grant=self._grant(s))
        if rollover or (reset and limits.quota_bytes is not None):
            # Fresh allowance at midnight, or kernel state recreated with a stale quota:
            # grant what is left from now on.
            s.day = today
            s.granted_used = used
            return Action("regrant", s.mac, grant=self._grant(s))
        return None

    def _finish(self, s: Row, reason: str, now: float) -> Action:
        s.state, s.ended_at, s.ended_reason = step(s.state, "ended", reason), now, reason
        return Action("deauthorize", s.mac, reason=reason)

    def _voucher_after_end(self, s: Row) -> None:
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
