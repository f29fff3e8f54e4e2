"""``SessionService``: logins, vouchers and accounting over the hub's SQLite file.

The decisions are in the pure modules (vouchers, quota, accounting, and ``states``: the
session's state machine); this layer reads rows, calls them and writes the outcome in one
transaction per operation. It never touches the kernel: it returns grants
(``grants``/``grant_for``) and actions (``account``) that the agent hands to enforcement.

The service is joined from one module per concern: ``login`` (logins), ``metering`` (the
accounting pass, re-grants), ``views`` (grants, status, lists) over ``core`` (rows, limits,
the end of a session); here: devices, vouchers and the centre's redemptions.

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
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hub_agent.config import normalise_mac
from hub_agent.enforce.discovery import Device
from hub_agent.sessions.core import Action
from hub_agent.sessions.login import Logins
from hub_agent.sessions.metering import Metering
from hub_agent.sessions.vouchers import new_local_code, normalise_code, verify_central_code
from hub_agent.store import transaction

__all__ = ["Action", "Redemption", "SessionService", "device_pseudonym"]


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


class SessionService(Logins, Metering):
    # --- devices --------------------------------------------------------------------------
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

    def logout(self, mac: str, now: float | None = None) -> None:
        self.end(mac, "logout", now)

    def end(self, mac: str, reason: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with transaction(self.db):
            self._end(normalise_mac(mac), reason, now)

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
