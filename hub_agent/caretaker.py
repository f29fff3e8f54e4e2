"""What the caretaker's dashboard asks the agent beyond the device list.

Names the caretaker gives devices, sales to reconcile the cash box, today's data per hour
and since when the Internet is down. Kept apart from ``SessionService`` (which owns
logins and accounting): these are read-mostly views over its tables plus two small tables
of their own (``Migrations("caretaker")``). The arithmetic is pure (``parse_price``,
``per_hour``, ``sales``, ``UplinkWatch``) and unit-tested; ``Desk`` is the thin SQL
around it, run on the agent's worker thread like every other database access.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlite_utils

from hub_agent.api.protocol import CaretakerView, SalesRow
from hub_agent.config import HubConfig, normalise_mac
from hub_agent.store import Migrations, transaction

CARETAKER = Migrations("caretaker")

NAME_MAX = 40
SALES_DAYS = 7
SALES_MONTHS = 3
USAGE_SAMPLE_S = 60.0  # the hourly chart needs no finer grain than this


@CARETAKER
def m001_names_and_hours(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE device_names (mac TEXT PRIMARY KEY, name TEXT NOT NULL)")
    # The day's cumulative bytes (usage_daily) as last seen in each local hour: the bytes
    # of an hour are the difference with the hour sampled before it (see per_hour).
    db.execute(
        """CREATE TABLE usage_hours (
            day TEXT NOT NULL,
            hour INTEGER NOT NULL CHECK (hour BETWEEN 0 AND 23),
            bytes INTEGER NOT NULL,
            PRIMARY KEY (day, hour)
        )"""
    )


# --- pure --------------------------------------------------------------------------------
_PRICE_RE = re.compile(r"^\s*(\d[\d\s.\u202f\u00a0]*)\s*(.*?)\s*$")


def parse_price(label: str) -> tuple[int, str] | None:
    """``"1 000 FCFA"`` -> ``(1000, "FCFA")``; None when the label has no leading amount.

    Plans carry a display label, not a number; West African francs have no decimals, so
    spaces and dots inside the amount are thousands separators."""
    m = _PRICE_RE.match(label)
    if m is None:
        return None
    digits = re.sub(r"\D", "", m.group(1))
    return (int(digits), m.group(2)) if digits else None


def per_hour(samples: Mapping[int, int]) -> list[int]:
    """Bytes in each of the 24 local hours from the day's cumulative samples by hour.

    An hour without a sample (agent stopped) gets 0; its traffic lands in the next hour
    sampled. A counter that went down (should not happen) counts as 0, never negative."""
    out = [0] * 24
    prev = 0
    for hour in sorted(samples):
        out[hour] = max(0, samples[hour] - prev)
        prev = max(prev, samples[hour])
    return out


@dataclass(frozen=True)
class Voucher:
    plan_id: str
    kind: str  # "local" (sold at this hub) | "central"
    issued_at: float
    first_use: float | None


@dataclass(frozen=True)
class MobileSale:
    """A mobile-money purchase granted here (hub_agent/purchases.py): paid at the centre,
    so it is not in the cash box."""

    plan_id: str
    at: float  # when the centre's grant was applied here


def _months_back(today: date, n: int) -> list[str]:
    y, m = today.year, today.month
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out


def sales(
    vouchers: Iterable[Voucher],
    prices: Mapping[str, int],
    now: float,
    tz: str,
    days: int = SALES_DAYS,
    months: int = SALES_MONTHS,
    mobile: Iterable[MobileSale] = (),
) -> tuple[list[SalesRow], list[SalesRow]]:
    """Tickets issued here, tickets used here and mobile-money sales, with their value,
    per local day (the last ``days``, newest first) and per month (the last ``months``).

    "Issued" counts the hub's own tickets (what the caretaker sold for cash); "used"
    counts every first use here, central tickets included (the caller leaves out the
    codes mobile money bought: those are counted as mobile-money sales). A plan since
    removed from the config is worth 0 (its price is not known any more)."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now, zone).date()
    day_keys = [(today - timedelta(days=i)).isoformat() for i in range(days)]
    month_keys = _months_back(today, months)
    acc: dict[str, list[int]] = {k: [0] * 6 for k in (*day_keys, *month_keys)}

    def add(ts: float, plan_id: str, slot: int) -> None:
        d = datetime.fromtimestamp(ts, zone).date().isoformat()
        for key in (d, d[:7]):
            if key in acc:
                acc[key][slot] += 1
                acc[key][slot + 1] += prices.get(plan_id, 0)

    for v in vouchers:
        if v.kind == "local":
            add(v.issued_at, v.plan_id, 0)
        if v.first_use is not None:
            add(v.first_use, v.plan_id, 2)
    for m in mobile:
        add(m.at, m.plan_id, 4)

    def rows(keys: list[str]) -> list[SalesRow]:
        return [SalesRow(period=k, issued=a[0], issued_value=a[1], used=a[2], used_value=a[3],
                         mobile=a[4], mobile_value=a[5])
                for k in keys for a in [acc[k]]]  # fmt: skip

    return rows(day_keys), rows(month_keys)


class UplinkWatch:
    """Since when the uplink is down, from the up/down answers the agent already has.

    Only in memory: after an agent restart during an outage, "since" counts from the
    restart (the dashboard then under-states the outage, never invents one)."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def observe(self, up: bool, now: float) -> float | None:
        if up:
            self.down_since = None
        elif self.down_since is None:
            self.down_since = now
        return self.down_since


# --- the SQL around it -------------------------------------------------------------------
class Desk:
    """The caretaker's requests (``NameDevice``, ``CaretakerInfo``) over the hub database."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        config: Callable[[], HubConfig],
        uplink_up: Callable[[], bool],
        hub_macs: Callable[[], frozenset[str]] = frozenset,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.config = config
        self.uplink_up = uplink_up
        self.hub_macs = hub_macs
        self.clock = clock
        self.uplink = UplinkWatch()
        self._sampled_at = float("-inf")

    def name_device(self, mac: str, name: str) -> None:
        """Give a device a name (an empty name removes it: the DHCP hostname shows again)."""
        mac = normalise_mac(mac)
        name = " ".join(name.split())[:NAME_MAX]
        with transaction(self.db):
            if name:
                self.db.conn.execute(
                    "INSERT INTO device_names (mac, name) VALUES (?, ?) "
                    "ON CONFLICT(mac) DO UPDATE SET name = excluded.name",
                    (mac, name),
                )
            else:
                self.db.conn.execute("DELETE FROM device_names WHERE mac = ?", (mac,))

    def is_hub(self, mac: str) -> bool:
        try:
            return normalise_mac(mac) in self.hub_macs()
        except ValueError:
            return False

    def names(self) -> dict[str, str]:
        return {
            str(m): str(n) for m, n in self.db.conn.execute("SELECT mac, name FROM device_names")
        }

    def _day_hour(self, now: float) -> tuple[str, int]:
        d = datetime.fromtimestamp(now, ZoneInfo(self.config().hub.timezone))
        return d.date().isoformat(), d.hour

    def tick(self, now: float | None = None) -> None:
        """After an accounting pass: note the uplink and (once a minute) today's bytes."""
        now = self.clock() if now is None else now
        self.uplink.observe(self.uplink_up(), now)
        if now - self._sampled_at < USAGE_SAMPLE_S:
            return
        self._sampled_at = now
        day, hour = self._day_hour(now)
        with transaction(self.db):
            self.db.conn.execute(
                "INSERT INTO usage_hours (day, hour, bytes) "
                "SELECT ?, ?, coalesce(sum(bytes), 0) FROM usage_daily WHERE day = ? "
                "ON CONFLICT(day, hour) DO UPDATE SET bytes = max(bytes, excluded.bytes)",
                (day, hour, day),
            )

    def hours_today(self, now: float) -> list[int]:
        day, hour = self._day_hour(now)
        samples = dict(
            self.db.conn.execute("SELECT hour, bytes FROM usage_hours WHERE day = ?", (day,))
        )
        # the hour in progress, up to this instant (the last sample may be a minute old)
        (total,) = self.db.conn.execute(
            "SELECT coalesce(sum(bytes), 0) FROM usage_daily WHERE day = ?", (day,)
        ).fetchone()
        samples[hour] = max(int(total), int(samples.get(hour, 0)))
        return per_hour({int(h): int(b) for h, b in samples.items()})

    def _vouchers(self, since: float, shop: bool) -> list[Voucher]:
        """Vouchers issued or first used since ``since``; not the codes mobile money
        bought (``shop``: the purchases table exists), which are mobile-money sales."""
        bought = " AND code NOT IN (SELECT code FROM purchases WHERE code IS NOT NULL)"
        rows = self.db.conn.execute(
            "SELECT plan_id, kind, issued_at, first_use FROM vouchers "
            "WHERE (issued_at >= ? OR first_use >= ?)" + (bought if shop else ""),
            (since, since),
        )
        return [Voucher(str(p), str(k), float(i), None if f is None else float(f))
                for p, k, i, f in rows]  # fmt: skip

    def _mobile_sales(self, since: float) -> list[MobileSale]:
        """Purchases the centre granted here (read from hub_agent/purchases.py's tables),
        on the day the grant was applied."""
        rows = self.db.conn.execute(
            "SELECT p.plan_id, g.applied_at FROM purchase_grants AS g"
            " JOIN purchases AS p ON p.request_id = g.request_id"
            " WHERE p.state = 'granted' AND g.applied_at >= ?",
            (since,),
        )
        return [MobileSale(str(p), float(a)) for p, a in rows]

    def view(self, now: float | None = None) -> CaretakerView:
        now = self.clock() if now is None else now
        config = self.config()
        tz = config.hub.timezone
        prices: dict[str, int] = {}
        currency = ""
        for plan in config.plans:
            parsed = parse_price(plan.price_label)
            if parsed is not None:
                prices[plan.id] = parsed[0]
                currency = currency or parsed[1]
            # the mobile-money price (whole FCFA), where the config has one, is exact
            exact = getattr(plan, "price_xof", None)
            if isinstance(exact, int):
                prices[plan.id] = exact
                currency = currency or "FCFA"
        # the first instant of the oldest month shown (older rows are not read)
        first = datetime.fromtimestamp(now, ZoneInfo(tz)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        ) - timedelta(days=31 * (SALES_MONTHS - 1))
        since = first.timestamp()
        shop = "purchase_grants" in self.db.table_names()  # the agent made it at start
        mobile = self._mobile_sales(since) if shop else []
        days, months = sales(self._vouchers(since, shop), prices, now, tz, mobile=mobile)
        return CaretakerView(
            names=self.names(),
            hub_macs=sorted(self.hub_macs()),
            sales_days=days,
            sales_months=months,
            currency=currency,
            hours_today=self.hours_today(now),
            uplink_down_since=self.uplink.observe(self.uplink_up(), now),
            now=now,
        )
