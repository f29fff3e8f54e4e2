"""SessionService on a real SQLite file: logins, voucher refusals, accounting, grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_agent.config import HubConfig, validate_config
from hub_agent.enforce.model import Counters
from hub_agent.sessions.db import open_sessions_db
from hub_agent.sessions.quota import MB
from hub_agent.sessions.service import Action, SessionService
from hub_agent.sessions.vouchers import format_code, make_central_code, month_index

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
SECRET = "test-deployment-voucher-secret-0123456789"
T0 = 1_780_000_000.0  # 2026-05-28 20:26 in Lomé
A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
STAFF = "02:00:5e:10:00:01"


def make_config(tmp: Path | None = None, **patch: Any) -> HubConfig:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["trust"]["voucher_secret"] = SECRET
    if tmp is not None:
        data["data_dir"] = str(tmp)
    for key, value in patch.items():
        data[key] = value
    return validate_config(data)


def make_service(tmp_path: Path, **patch: Any) -> SessionService:
    cfg = make_config(tmp_path, **patch)
    return SessionService(cfg, open_sessions_db(tmp_path / "hub.db"))


@pytest.fixture
def svc(tmp_path: Path) -> SessionService:
    return make_service(tmp_path)


def central(plan: str, serial: int, now: float = T0, secret: str = SECRET) -> str:
    return make_central_code(secret.encode(), plan, month_index(now), serial)


def ctr(mac: str, up: int, down: int, exhausted: bool = False) -> dict[str, Counters]:
    return {mac: Counters(mac, up, down, exhausted)}


# --- logins and refusals ---------------------------------------------------------------


def test_local_voucher_login_gives_a_grant_with_the_plan(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    view, err = svc.login(A, "10.42.0.100", "voucher", format_code(code).lower(), T0)
    assert err is None and view is not None
    assert (view.state, view.plan_id, view.bytes_used) == ("authorised", "heure", 0)
    assert view.bytes_remaining == 300 * MB and view.seconds_remaining == 3600
    grant = svc.grant_for(A, T0)
    assert grant is not None
    assert (grant.ip, grant.down_kbit, grant.up_kbit, grant.quota_bytes) == (
        "10.42.0.100", 2000, 1000, 300 * MB,
    )  # fmt: skip
    assert svc.voucher_status(code) == "active"
    # tapping "connect" again is harmless
    assert svc.login(A, "10.42.0.100", "voucher", code, T0 + 5)[1] is None


def test_refusals_each_have_their_code(svc: SessionService) -> None:
    [good, revoked, expired] = svc.issue_local_vouchers("heure", 3, T0)
    expired2 = svc.issue_local_vouchers("heure", 1, T0, expires_at=T0 - 1)[0]
    svc.revoke(revoked, T0)
    one_off = good[:5] + ("X" if good[5] != "X" else "Y") + good[6:]
    forged = make_central_code(b"not-the-deployment-secret-000000", "jour", month_index(T0), 1)
    assert svc.login(A, None, "voucher", one_off, T0) == (None, "unknown_code")
    assert svc.login(A, None, "voucher", forged, T0) == (None, "unknown_code")
    assert svc.login(A, None, "voucher", "hello", T0) == (None, "unknown_code")
    assert svc.login(A, None, "voucher", revoked, T0) == (None, "revoked")
    assert svc.login(A, None, "voucher", expired2, T0) == (None, "expired")
    assert svc.login(A, None, "voucher", good, T0)[1] is None
    assert svc.login(B, None, "voucher", good, T0) == (None, "used_up")  # 1 device per voucher
    # time quota: an hour from first use, for every device
    svc.logout(A, T0 + 10)
    assert svc.login(A, None, "voucher", good, T0 + 3600) == (None, "expired")
    assert svc.voucher_status(good) == "expired"
    assert expired  # issued without expiry, still unused
    assert svc.voucher_status(expired) == "unused"


def test_blocked_and_disabled_methods(tmp_path: Path) -> None:
    svc = make_service(tmp_path, portal={"login_methods": ["voucher"]})
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    assert svc.login(A, None, "free", None, T0) == (None, "method_disabled")
    svc.block(A, True, T0)
    assert svc.login(A, None, "voucher", code, T0) == (None, "blocked")
    assert A in svc.grants(T0).blocked_macs
    svc.block(A, False, T0)
    assert svc.login(A, None, "voucher", code, T0)[1] is None
    svc.block(A, True, T0 + 1)  # blocking ends the live session
    assert svc.grant_for(A, T0 + 1) is None
    view = svc.session_view(A, T0 + 2)
    assert view is not None and (view.state, view.ended_reason) == ("ended", "blocked")


def test_devices_per_voucher(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("jour", 1, T0)  # 2 devices
    assert svc.login(A, None, "voucher", code, T0)[1] is None
    assert svc.login(B, None, "voucher", code, T0 + 60)[1] is None
    assert svc.login(C, None, "voucher", code, T0 + 120) == (None, "used_up")
    # the time clock is the voucher's: B's session ends with A's
    view = svc.session_view(B, T0 + 60)
    assert view is not None and view.seconds_remaining == 1440 * 60 - 60


def test_offline_central_code_works_on_a_hub_that_never_saw_it(tmp_path: Path) -> None:
    hub1 = make_service(tmp_path / "h1")
    hub2 = make_service(tmp_path / "h2")
    code = central("jour", 42)
    for hub in (hub1, hub2):
        view, err = hub.login(A, None, "voucher", format_code(code), T0)
        assert err is None and view is not None and view.plan_id == "jour"
    [r] = hub1.pending_redemptions()
    assert (r.code, r.mac, r.plan_id, r.hub_id) == (code, A, "jour", "tg-demo-mairie-01")
    hub1.mark_reported([r])
    assert hub1.pending_redemptions() == []
    # without the deployment secret a hub cannot accept central codes
    data = make_config(tmp_path).model_dump(mode="json")
    data["trust"]["voucher_secret"] = None
    plain = SessionService(validate_config(data), open_sessions_db(tmp_path / "h3" / "hub.db"))
    assert plain.login(A, None, "voucher", code, T0) == (None, "unknown_code")


def test_expired_central_code(svc: SessionService) -> None:
    last_year = T0 - 400 * 86400
    code = central("heure", 7, now=last_year)
    assert svc.login(A, None, "voucher", code, T0) == (None, "expired")
    # and the caretaker can revoke a central code this hub has never seen
    other = central("heure", 8)
    assert svc.revoke(other, T0)
    assert svc.login(A, None, "voucher", other, T0) == (None, "revoked")


# --- accounting ------------------------------------------------------------------------


def test_data_quota_ends_the_session_and_uses_up_the_voucher(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    assert svc.account(ctr(A, 1 * MB, 100 * MB), T0 + 10) == []
    view = svc.session_view(A, T0 + 10)
    assert view is not None and view.bytes_used == 101 * MB
    assert view.bytes_remaining == 199 * MB
    actions = svc.account(ctr(A, 2 * MB, 298 * MB), T0 + 20)
    assert actions == [Action("deauthorize", A, reason="data_quota")]
    view = svc.session_view(A, T0 + 21)
    assert view is not None and (view.state, view.ended_reason) == ("expired", "data_quota")
    assert svc.voucher_status(code) == "used_up"
    assert svc.login(A, None, "voucher", code, T0 + 30) == (None, "used_up")
    assert svc.grants(T0 + 30).grants == tuple(g for g in svc.grants(T0).grants if g.staff)


def test_kernel_quota_trip_is_believed(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    actions = svc.account(ctr(A, 0, 299 * MB, exhausted=True), T0 + 10)
    assert actions == [Action("deauthorize", A, reason="data_quota")]


def test_throttle_plan_keeps_a_trickle_then_time_ends_it(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("jour", 1, T0)
    svc.login(A, "10.42.0.7", "voucher", code, T0)
    [act] = svc.account(ctr(A, 0, 1000 * MB), T0 + 10)
    assert act.kind == "throttle" and act.grant is not None
    assert (act.grant.down_kbit, act.grant.up_kbit, act.grant.quota_bytes) == (128, 128, None)
    assert svc.account(ctr(A, 0, 1001 * MB), T0 + 20) == []  # stays throttled, no churn
    view = svc.session_view(A, T0 + 20)
    assert view is not None and view.state == "throttled" and view.bytes_remaining == 0
    end = svc.account(ctr(A, 0, 1002 * MB), T0 + 1440 * 60)
    assert end == [Action("deauthorize", A, reason="time_quota")]
    assert svc.voucher_status(code) == "expired"


def test_idle_session_ends_and_resumes_with_its_usage(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    svc.account(ctr(A, 1000, 5000), T0 + 10)
    assert svc.account(ctr(A, 1000, 5000), T0 + 10 + 15 * 60 - 1) == []
    assert svc.account(ctr(A, 1000, 5000), T0 + 10 + 15 * 60) == [
        Action("deauthorize", A, reason="idle")
    ]
    view, err = svc.login(A, None, "voucher", code, T0 + 1000)
    assert err is None and view is not None and view.bytes_used == 6000
    grant = svc.grant_for(A)
    assert grant is not None and grant.quota_bytes == 300 * MB - 6000
    # the new kernel state counts from 0 again
    svc.account(ctr(A, 10, 20), T0 + 1010)
    view = svc.session_view(A, T0 + 1010)
    assert view is not None and view.bytes_used == 6030


def test_library_only_use_is_not_idle(svc: SessionService) -> None:
    # A phone reading the local library moves no counted byte but is busy all the same.
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    busy = {A: Counters(A, 0, 0, active=True)}
    for minute in range(1, 31):
        assert svc.account(busy, T0 + minute * 60) == []
    assert svc.account(ctr(A, 0, 0), T0 + 30 * 60 + 15 * 60) == [
        Action("deauthorize", A, reason="idle")
    ]


def test_sent_since() -> None:
    from hub_agent.enforce.enforcer import sent_since

    assert not sent_since(None, 10)  # first read after a start: a baseline only
    assert sent_since(10, 11) and not sent_since(10, 10)
    assert sent_since(10, 3) and not sent_since(10, 0)  # re-created elements


def test_counter_reset_is_not_lost_nor_double_counted(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    svc.account(ctr(A, 100, 10 * MB), T0 + 10)
    svc.account(ctr(A, 100, 10 * MB), T0 + 20)  # same sample again (restart): nothing added
    # kernel state recreated (reboot): counters restart; the quota is re-granted from here
    [act] = svc.account(ctr(A, 0, 2 * MB), T0 + 30)
    assert act.kind == "regrant" and act.grant is not None
    assert act.grant.quota_bytes == 300 * MB - (100 + 12 * MB)
    view = svc.session_view(A, T0 + 30)
    assert view is not None and view.bytes_used == 100 + 12 * MB
    # the grant stays stable afterwards (no rebuild on every pass)
    assert svc.account(ctr(A, 0, 3 * MB), T0 + 40) == []
    assert svc.grant_for(A) == act.grant
    day = svc.conn.execute("SELECT sum(bytes) FROM usage_daily WHERE mac = ?", (A,)).fetchone()
    assert day[0] == 100 + 13 * MB


def test_plan_change_applies_to_live_sessions(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    data = svc.config.model_dump(mode="json")
    data["trust"]["voucher_secret"] = SECRET
    svc.account(ctr(A, 0, 20 * MB), T0 + 5)
    data["plans"][0]["data_quota_mb"] = 50
    [act] = svc.update_config(validate_config(data), T0 + 6)
    # re-granted with what is left under the new quota, counted from now
    assert act.kind == "regrant" and act.grant is not None
    assert act.grant.quota_bytes == 30 * MB
    assert svc.grant_for(A) == act.grant
    assert svc.account(ctr(A, 0, 50 * MB), T0 + 10) == [
        Action("deauthorize", A, reason="data_quota")
    ]
    # a config that changes nothing for a plan leaves its devices alone; removing it ends them
    [code2] = svc.issue_local_vouchers("jour", 1, T0)
    svc.login(B, None, "voucher", code2, T0 + 11)
    data["plans"][0]["price_label"] = "150 FCFA"
    assert svc.update_config(validate_config(data), T0 + 12) == []
    data["plans"] = [data["plans"][0]]
    assert svc.update_config(validate_config(data), T0 + 13) == [
        Action("deauthorize", B, reason="caretaker")
    ]


# --- free tier -------------------------------------------------------------------------


def test_free_tier_daily_allowance_resets_at_lome_midnight(svc: SessionService) -> None:
    view, err = svc.login(A, None, "free", None, T0)
    assert err is None and view is not None and view.plan_id == "free"
    grant = svc.grant_for(A)
    assert grant is not None and (grant.down_kbit, grant.quota_bytes) == (1000, 100 * MB)
    assert svc.account(ctr(A, 0, 100 * MB), T0 + 10) == [
        Action("deauthorize", A, reason="data_quota")
    ]
    assert svc.login(A, None, "free", None, T0 + 20) == (None, "free_used_today")
    midnight = 1_780_012_800.0  # 2026-05-29 00:00 in Lomé
    assert svc.login(A, None, "free", None, midnight - 1) == (None, "free_used_today")
    view, err = svc.login(A, None, "free", None, midnight)
    assert err is None and view is not None and view.bytes_used == 0


def test_live_free_session_gets_a_fresh_allowance_after_midnight(svc: SessionService) -> None:
    midnight = 1_780_012_800.0
    svc.login(B, None, "free", None, midnight - 300)
    svc.account(ctr(B, 0, 60 * MB), midnight - 200)
    [act] = svc.account(ctr(B, 0, 61 * MB), midnight + 5)
    assert act.kind == "regrant" and act.grant is not None
    assert act.grant.quota_bytes == 100 * MB - 1 * MB
    days = dict(
        svc.conn.execute("SELECT day, free_bytes FROM usage_daily WHERE mac = ?", (B,)).fetchall()
    )
    assert days == {"2026-05-28": 60 * MB, "2026-05-29": 1 * MB}


def test_switching_from_free_to_a_voucher(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "free", None, T0)
    svc.account(ctr(A, 1000, 20 * MB), T0 + 2)
    view, err = svc.login(A, None, "voucher", code, T0 + 5)
    assert err is None and view is not None and view.plan_id == "heure"
    assert [g.mac for g in svc.grants(T0).grants if not g.staff] == [A]
    # the kernel re-authorises the device in place: its counters go on from 20 MB, and
    # only what comes after the switch is charged to the voucher
    svc.account(ctr(A, 1000, 23 * MB), T0 + 10)
    view = svc.session_view(A, T0 + 10)
    assert view is not None and view.bytes_used == 3 * MB
    free = svc.conn.execute("SELECT free_bytes, bytes FROM usage_daily WHERE mac = ?", (A,))
    assert free.fetchone() == (20 * MB + 1000, 23 * MB + 1000)


def test_grants_views_and_staff(svc: SessionService) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, "10.42.0.100", "voucher", code, T0)
    svc.seen(C, "10.42.0.102", T0)
    state = svc.grants(T0)
    by_mac = {g.mac: g for g in state.grants}
    assert set(by_mac) == {A, STAFF}
    assert by_mac[STAFF].staff and by_mac[STAFF].quota_bytes is None
    views = {d.mac: d for d in svc.device_views(T0)}
    assert set(views) == {A, C, STAFF}
    assert views[STAFF].staff and views[C].session is None
    assert views[A].session is not None and views[A].ip == "10.42.0.100"


def test_unknown_plan_for_local_vouchers(svc: SessionService) -> None:
    with pytest.raises(KeyError):
        svc.issue_local_vouchers("semaine", 3, T0)


def test_known_reboot_starts_from_fresh_counters_and_remaining_quota(
    svc: SessionService,
) -> None:
    [code] = svc.issue_local_vouchers("heure", 1, T0)
    svc.login(A, None, "voucher", code, T0)
    svc.account(ctr(A, 0, 50 * MB), T0 + 10)
    # the agent starts on an empty kernel table: it says so before granting
    svc.note_kernel_reset([A], T0 + 20)
    grant = svc.grant_for(A)
    assert grant is not None and grant.quota_bytes == 250 * MB
    assert svc.account(ctr(A, 0, 1 * MB), T0 + 30) == []  # no reset guess, no regrant
    view = svc.session_view(A, T0 + 30)
    assert view is not None and view.bytes_used == 51 * MB


def test_service_is_what_the_agent_handler_expects(svc: SessionService) -> None:
    from hub_agent.sessions.interface import Sessions

    sessions: Sessions = svc  # checked by mypy; at run time, the methods exist
    for name in (
        "login",
        "logout",
        "end",
        "grant_for",
        "grants",
        "session_view",
        "device_views",
        "issue_local_vouchers",
        "block",
        "is_blocked",
        "seen",
    ):
        assert callable(getattr(sessions, name))


def test_discovered_devices_keep_names_and_never_go_back_in_time(svc: SessionService) -> None:
    from hub_agent.enforce.discovery import Device

    mac = "02:00:00:00:00:0d"
    svc.record_devices([Device(mac, ip="10.42.0.130", hostname="phone-amy", last_seen=T0)])
    svc.record_devices([Device(mac, ip=None, hostname=None, last_seen=T0 - 50)])
    (view,) = [d for d in svc.device_views(T0) if d.mac == mac]
    assert (view.ip, view.hostname, view.last_seen) == ("10.42.0.130", "phone-amy", T0)
    assert view.session is None
    assert svc.record_devices([]) == 0


def test_wrong_codes_lock_by_mac_and_a_right_code_passes_until_then(tmp_path: Path) -> None:
    """Issue 18: a person who mistyped is never refused a right code; 50 wrong codes
    (a brute force) lock the device, by MAC (a new address does not escape), in SQLite
    (a restart does not reset it); only answers about the code count."""
    from hub_agent.sessions.attempts import warn

    svc = make_service(tmp_path)
    cfg = svc.config
    mac = A
    limit = cfg.portal.login_attempts
    assert limit == 50
    good = svc.issue_local_vouchers("heure", 2, now=T0)
    for i in range(limit - 1):
        assert svc.login(mac, f"10.42.0.{100 + i % 50}", "voucher", "XXXX", now=T0 + i)[1]
    v = svc.attempts(mac, now=T0 + 60)
    assert (v.retry_after, v.attempts_left, warn(v)) == (0, 1, 1)
    view, err = svc.login(mac, "10.42.0.9", "voucher", good[0], now=T0 + 60)
    assert err is None and view is not None  # mistyped 49 times, the right code passes
    assert svc.attempts(mac, now=T0 + 61).attempts_left == limit  # and clears the count
    svc.logout(mac, now=T0 + 62)
    for i in range(limit):
        svc.login(mac, "10.42.0.10", "voucher", f"BAD{i}", now=T0 + 70)
    svc2 = SessionService(cfg, open_sessions_db(tmp_path / "hub.db"))  # an agent restart
    view, err = svc2.login(mac, "10.42.0.11", "voucher", good[1], now=T0 + 80)
    assert (view, err) == (None, "rate_limited")
    assert svc2.attempts(mac, now=T0 + 80).retry_after > 0
    # another device is not affected; the lock ends with the window
    assert svc2.login(B, "10.42.0.12", "voucher", good[1], now=T0 + 80)[1] is None
    later = T0 + 70 + cfg.portal.lockout_seconds + 1
    assert svc2.attempts(mac, now=later).retry_after == 0
