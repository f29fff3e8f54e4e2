"""Read views of the sessions: what enforcement (grants) and the portal (status, lists) see.

Nothing here writes. A session's state as the portal reads it is ``states.shown``'s.
"""

from __future__ import annotations

import time

from hub_agent.api.protocol import DeviceView, SessionView, UsedElsewhere
from hub_agent.config import normalise_mac
from hub_agent.enforce.model import DesiredState, Grant
from hub_agent.sessions import attempts, quota
from hub_agent.sessions import roaming as sroaming
from hub_agent.sessions.accounts import Terms
from hub_agent.sessions.core import Core, Row
from hub_agent.sessions.states import ENDED, shown
from hub_agent.sessions.vouchers import normalise_code

RECENT_S = 24 * 3600  # an ended session is still shown (with its reason) this long


class Views(Core):
    # --- enforcement ----------------------------------------------------------------------
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

    # --- the portal -----------------------------------------------------------------------
    def _view(self, s: Row, now: float) -> SessionView:
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
        grant = self._grant(s) if limits is not None and s.state != ENDED else None
        used = self._used(s, quota.local_day(now, self.tz)) if s.free else s.total
        first = self._voucher_first_use(s.code) or s.first_use
        state, reason = shown(s.state, s.ended_reason)
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
        if s.state == ENDED and (s.ended_at or 0) < now - RECENT_S:
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
        portal = self.config.portal
        mac = normalise_mac(mac)
        return attempts.standing(self.conn, mac, now, portal.login_attempts, portal.lockout_seconds)

    def voucher_status(self, code: str) -> str | None:
        c = normalise_code(code)
        row = None if c is None else self._one("SELECT status FROM vouchers WHERE code = ?", [c])
        return None if row is None else str(row[0])
