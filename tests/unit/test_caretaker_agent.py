"""The agent's side of the caretaker's dashboard: names, sales, hourly data, uplink, the hub
itself kept out of the device list, and ``hub-agent run``/``status`` for the caretaker."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from hub_agent.api.protocol import (
    Block,
    CaretakerInfo,
    HealthView,
    NameDevice,
    Pay,
    SalesRow,
)
from hub_agent.caretaker import (
    CARETAKER,
    Desk,
    MobileSale,
    UplinkWatch,
    Voucher,
    parse_price,
    per_hour,
    sales,
)
from hub_agent.cli import missing_interface
from hub_agent.enforce.discovery import Observation
from hub_agent.enforce.model import Counters
from hub_agent.handler import AgentHandler
from hub_agent.lan_devices import hub_addresses, not_the_hub
from hub_agent.purchases import plan_price
from hub_agent.sessions.db import SESSIONS
from hub_agent.sessions.service import SessionService
from hub_agent.status import gather_status, render_text
from hub_agent.store import open_db
from hub_agent.telemetry import db_path
from tests.unit.test_purchases import IP_A, Shop
from tests.unit.test_sessions_service import EXAMPLE, T0, A, B, make_config

LOME = ZoneInfo("Africa/Lome")
HUB_MAC = "02:00:00:00:00:01"
BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def at(y: int, mo: int, d: int, h: int = 12, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=LOME).timestamp()


NOW = at(2026, 3, 14, 15, 30)


# --- pure --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("label", "want"),
    [
        ("100 FCFA", (100, "FCFA")),
        ("1 000 FCFA", (1000, "FCFA")),
        ("1.500 F", (1500, "F")),
        ("gratuit", None),
        ("", None),
    ],
)
def test_price_labels_give_amounts(label: str, want: tuple[int, str] | None) -> None:
    assert parse_price(label) == want


def test_per_hour_is_the_difference_between_samples() -> None:
    hours = per_hour({8: 100, 9: 250, 12: 1000})
    assert hours[8] == 100 and hours[9] == 150 and hours[12] == 750
    assert sum(hours) == 1000 and len(hours) == 24
    assert per_hour({10: 500, 11: 400})[11] == 0  # never negative


def test_sales_per_day_and_month_with_values() -> None:
    vouchers = [
        Voucher("heure", "local", at(2026, 3, 14, 9), at(2026, 3, 14, 10)),
        Voucher("heure", "local", at(2026, 3, 14, 9), None),
        Voucher("jour", "local", at(2026, 3, 13, 23, 30), at(2026, 3, 14, 0, 15)),
        Voucher("jour", "central", at(2026, 3, 14, 11), at(2026, 3, 14, 11)),
        Voucher("heure", "local", at(2026, 2, 2), at(2026, 2, 2)),
        Voucher("gone", "local", at(2026, 3, 14), None),  # plan removed: worth 0
    ]
    days, months = sales(vouchers, {"heure": 100, "jour": 300}, NOW, "Africa/Lome")
    assert days[0] == SalesRow(
        period="2026-03-14", issued=3, issued_value=200, used=3, used_value=700
    )
    assert days[1] == SalesRow(
        period="2026-03-13", issued=1, issued_value=300, used=0, used_value=0
    )
    assert len(days) == 7 and days[-1].period == "2026-03-08"
    assert [m.period for m in months] == ["2026-03", "2026-02", "2026-01"]
    assert (months[0].issued, months[0].issued_value, months[0].used_value) == (4, 500, 700)
    assert (months[1].issued, months[1].used, months[1].used_value) == (1, 1, 100)


def test_mobile_money_sales_per_day_and_month_beside_the_tickets() -> None:
    mobile = [
        MobileSale("jour", at(2026, 3, 14, 10)),
        MobileSale("heure", at(2026, 3, 14, 0, 5)),
        MobileSale("jour", at(2026, 3, 13, 23, 55)),
        MobileSale("jour", at(2026, 2, 27)),
        MobileSale("jour", at(2025, 12, 31)),  # older than the months shown
    ]
    cash = [Voucher("heure", "local", at(2026, 3, 14, 9), None)]
    days, months = sales(cash, {"heure": 100, "jour": 300}, NOW, "Africa/Lome", mobile=mobile)
    assert days[0] == SalesRow(period="2026-03-14", issued=1, issued_value=100, used=0,
                               used_value=0, mobile=2, mobile_value=400)  # fmt: skip
    assert (days[1].mobile, days[1].mobile_value, days[1].issued) == (1, 300, 0)
    assert [(m.mobile, m.mobile_value) for m in months] == [(3, 700), (1, 300), (0, 0)]


def test_uplink_down_since_the_first_down_answer() -> None:
    w = UplinkWatch()
    assert w.observe(True, 10) is None
    assert w.observe(False, 20) == 20
    assert w.observe(False, 80) == 20
    assert w.observe(True, 90) is None


def test_the_hub_is_never_observed_as_a_device() -> None:
    cfg = make_config()
    own = hub_addresses(cfg)
    seen = [
        Observation(HUB_MAC, 1.0, "arp", ip="10.42.0.1"),
        Observation("02:00:00:00:00:99", 1.0, "arp", ip="10.42.0.1"),  # claims the hub's IP
        Observation("02:00:00:00:00:98", 1.0, "neigh", ip6="fd42::1"),
        Observation(A, 1.0, "dhcp", ip="10.42.0.100", hostname="tecno"),
    ]
    assert [o.mac for o in not_the_hub(seen, frozenset({HUB_MAC}), own)] == [A]


def test_missing_interface_is_one_line() -> None:
    cfg = make_config()
    assert missing_interface(cfg, {"lan0", "wan0", "lo"}) is None
    line = missing_interface(cfg, {"eth0", "lo"})
    assert line is not None and "'lan0'" in line and "network.lan.interface" in line
    assert "eth0" in line and "\n" not in line


# --- over SQLite, through the handler -----------------------------------------------------
@pytest.fixture
def desk(tmp_path: Path) -> tuple[Desk, SessionService, AgentHandler]:
    cfg = make_config(tmp_path)
    db = open_db(db_path(tmp_path), SESSIONS, CARETAKER)
    svc = SessionService(cfg, db)
    up = [True]
    clock = [NOW]
    d = Desk(db, lambda: cfg, lambda: up[0], lambda: frozenset({HUB_MAC}), lambda: clock[0])
    handler = AgentHandler(
        svc, kernel=_NoKernel(), mac_for_ip=lambda ip: None, health=_no_health,
        uplink_up=lambda: up[0], clock=lambda: clock[0], caretaker=d,
    )  # fmt: skip
    d._up, d._clock = up, clock  # type: ignore[attr-defined]  # test controls
    return d, svc, handler


class _NoKernel:
    def authorize(self, grant: object) -> None: ...
    def deauthorize(self, mac: str) -> None: ...


def _no_health() -> HealthView:
    raise AssertionError("not asked")


def test_names_sales_hours_and_uplink_through_the_handler(
    desk: tuple[Desk, SessionService, AgentHandler],
) -> None:
    d, svc, handler = desk
    assert handler.handle(NameDevice(mac=A.upper(), name="  Tablette   du  CM2 ")).ok
    assert not handler.handle(NameDevice(mac="nope", name="x")).ok
    [code] = svc.issue_local_vouchers("heure", 1, at(2026, 3, 14, 8))
    svc.login(A, "10.42.0.100", "voucher", code, at(2026, 3, 14, 9))
    svc.account({A: Counters(A, 1000, 4000, False)}, at(2026, 3, 14, 9, 30))
    d.tick(at(2026, 3, 14, 9, 30))
    svc.account({A: Counters(A, 2000, 9000, False)}, at(2026, 3, 14, 11))
    d._up[0] = False  # type: ignore[attr-defined]
    d.tick(at(2026, 3, 14, 15, 20))
    r = handler.handle(CaretakerInfo())
    assert r.ok and r.caretaker is not None
    v = r.caretaker
    assert v.names == {A: "Tablette du CM2"}
    assert v.hub_macs == [HUB_MAC]
    assert v.sales_days[0].issued == 1 and v.sales_days[0].used == 1
    assert v.sales_days[0].issued_value == 100 and v.currency == "FCFA"
    assert v.hours_today[9] == 5000 and v.hours_today[15] == 6000 and sum(v.hours_today) == 11000
    assert v.uplink_down_since == at(2026, 3, 14, 15, 20)
    assert handler.handle(NameDevice(mac=A, name="")).ok  # a name can be taken back
    assert d.names() == {}


def test_the_hub_cannot_be_blocked(desk: tuple[Desk, SessionService, AgentHandler]) -> None:
    _, svc, handler = desk
    r = handler.handle(Block(mac=HUB_MAC.upper(), blocked=True))
    assert (r.ok, r.error) == (False, "own_hub")
    assert not svc.is_blocked(HUB_MAC)
    assert handler.handle(Block(mac=B, blocked=True)).ok and svc.is_blocked(B)


# --- hub-agent status / run ---------------------------------------------------------------
def test_status_shows_clients_quotas_and_cache(
    tmp_path: Path, desk: tuple[Desk, SessionService, AgentHandler]
) -> None:
    d, svc, _ = desk
    d.name_device(A, "Kofi")
    svc.record_devices([])
    svc.seen(A, "10.42.0.100", NOW)
    [code] = svc.issue_local_vouchers("heure", 1, NOW)
    svc.login(A, "10.42.0.100", "voucher", code, NOW)
    svc.account({A: Counters(A, 0, 50_000_000, False)}, NOW + 10)
    st = gather_status(make_config(tmp_path), now=NOW + 20)
    assert st["clients"]["seen_recently"] == 1
    assert st["clients"]["sessions"][0]["name"] == "Kofi"
    text = render_text(st, now=NOW + 20)
    assert "Kofi (02:00:00:00:00:0a): heure authorised, 50 MB of 300 MB" in text
    assert "quota         heure: 300 MB, 60 min" in text
    assert "cache         0/0 items ready" in text


def test_run_without_the_interface_is_one_line_and_exit_3(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["network"]["lan"]["interface"] = "nosuchlan9"
    data["data_dir"] = str(tmp_path / "data")
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True))
    r = subprocess.run(
        [str(BIN / "hub-agent"), "run", "--config", str(cfg)], capture_output=True, text=True
    )
    assert r.returncode == 3
    assert r.stderr.count("\n") == 1 and "'nosuchlan9'" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_desk_counts_a_granted_purchase_as_mobile_money_not_as_a_used_ticket(
    tmp_path: Path,
) -> None:
    """A real purchase granted by the real Purchases (hub_agent/purchases.py): a mobile
    money sale on its day; its code, used by the grant's login, is not a ticket used too."""
    shop = Shop(tmp_path)
    CARETAKER.apply(shop.db)
    desk = Desk(shop.db, lambda: shop.config, lambda: True, frozenset, lambda: T0 + 600)
    empty = desk.view()
    assert (empty.sales_days[0].mobile, empty.sales_days[0].used) == (0, 0)
    [cash] = shop.sessions.issue_local_vouchers("heure", 1, T0)
    shop.sessions.login(B, "10.42.0.101", "voucher", cash, T0 + 10)
    paid = shop.p.pay(Pay(ip=IP_A, plan_id="jour", phone="90123456"), A, T0).purchase
    waiting = shop.p.pay(Pay(ip=IP_A, plan_id="jour", phone="99123456"), A, T0).purchase
    assert paid is not None and waiting is not None
    assert shop.p.apply_grant(shop.grant(paid.ref, mac=A), T0 + 30)
    assert A in shop.kernel.authorized  # the bought code was used here, by the grant's login
    used = shop.db.execute("SELECT count(*) FROM vouchers WHERE first_use IS NOT NULL")
    assert used.fetchone()[0] == 2
    today = desk.view().sales_days[0]
    assert (today.issued, today.used, today.used_value) == (1, 1, 100)  # the cash ticket only
    assert (today.mobile, today.mobile_value) == (1, plan_price(shop.config.plan("jour")))
    assert today.mobile_value > 0 and desk.view().sales_months[0].mobile == 1
