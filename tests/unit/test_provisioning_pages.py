"""Fleet pages (pure rendering) and the push report tracker."""

from __future__ import annotations

import json
import re
import threading
import time

from provisioning import fleet
from provisioning.controller import pages
from provisioning.controller.fleet_query import FleetQuery, FleetView
from provisioning.geo import TOGO_OUTLINE, Projection, default_position
from provisioning.push import Tracker

NOW = 1_000_000.0


def row(hub_id: str, status_online: int, lat: float, lon: float, **extra: object) -> fleet.FleetRow:
    base = {
        "id": hub_id,
        "kind": "school",
        "name": f"École <{hub_id}>",
        "region": "Kara",
        "lat": lat,
        "lon": lon,
        "online": status_online,
        "last_seen": NOW - 5,
        "state_ts": NOW - 50,
        "desired_version": 2,
        "last_health": json.dumps({"cpu": 30, "dsk": 55, "dev": 12, "srv": 7_000_000}),
        **extra,
    }
    return fleet.fleet_row(base, NOW)


def test_outline_is_togo_and_projection_keeps_it_in_the_viewport() -> None:
    lons = [p[0] for p in TOGO_OUTLINE]
    lats = [p[1] for p in TOGO_OUTLINE]
    assert -0.2 < min(lons) < 0.1 and 1.7 < max(lons) < 1.9
    assert 5.9 < min(lats) < 6.2 and 10.9 < max(lats) < 11.2
    proj = Projection()
    for lon, lat in TOGO_OUTLINE:
        x, y = proj.xy(lon, lat)
        assert 0 <= x <= proj.width and 0 <= y <= proj.height
    pos = default_position("tg-x", "Savanes")
    assert pos[0] is not None and pos[1] is not None and pos[0] > 10
    assert default_position("tg-x", None) == (None, None)


def view_of(rows: list[fleet.FleetRow]) -> FleetView:
    counts = {s: sum(1 for r in rows if r.status == s) for s in fleet.STATUSES}
    return FleetView(FleetQuery(), rows, len(rows), len(rows), counts, 0, ["Kara"], rows)  # type: ignore[arg-type]


def test_fleet_page_has_map_dots_by_state_table_and_no_external_resources() -> None:
    rows = [row("a-online", 1, 9.5, 1.1), row("b-offline", 0, 6.3, 1.2)]
    html = pages.fleet_page(view_of(rows), NOW)
    assert html.count("<circle") == 2 + 4  # hubs + legend
    assert f"fill='{pages.COLOURS['offline']}'" in html
    assert '<table id="fleet">' in html and "<script" not in html
    assert "École &lt;a-online&gt;" in html and "<a-online>" not in html  # escaped
    assert "55 %" in html and "7 Mo" in html and "hors ligne" in html
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)  # nothing external


def test_fleet_page_lists_voucher_findings_from_the_registry(central_db_url: str) -> None:
    from provisioning import registry as reg
    from provisioning import vouchers
    from provisioning.controller.web import serve

    db = reg.open_registry(central_db_url)
    vouchers.findings_for(db)  # creates the tables, as a controller does
    db.execute(
        "INSERT INTO central_redemptions (code, hub_id, mac, at, plan_id) VALUES "
        "('ABCDEFGHJKMN', 'tg-a', 'p1', 1.0, 'heure'), ('ABCDEFGHJKMN', 'tg-b', 'p2', 2.0, 'heure')"
    )
    server = serve(central_db_url, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import urllib.request

        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url, timeout=5) as r:
            html = r.read().decode()
    finally:
        server.shutdown()
    assert "<b>1</b>anomalies de tickets" in html
    assert "jamais émis" in html and "ABCD-EFGH-JKMN" in html and "tg-a, tg-b" in html
    assert "<b>0</b>anomalies de tickets" in pages.fleet_page(view_of([]), NOW)


def test_hub_page_draws_charts_and_events() -> None:
    samples = [(NOW - 600 + 60 * i, {"cpu": 10 + i, "dsk": 50, "dev": i}) for i in range(10)]
    events = [{"seq": 1, "ts": NOW - 30, "type": "agent_start", "data": json.dumps({"x": 1})}]
    html = pages.hub_page(row("a", 1, 9.5, 1.1), samples, events, [(4, 6)], NOW)
    assert html.count("<polyline") == 3  # cpu, disk, devices; no data for the others
    assert "CPU: 19%" in html and "Agent démarré" in html and "4–6" in html
    assert "pas de données" in html and "agent_start" not in html


def test_tracker_follows_reports_of_the_version_sent() -> None:
    seen: list[tuple[str, str, str]] = []
    t = Tracker(on_change=lambda *a: seen.append(a))
    t.expect("h1", 5)
    t.expect("h2", 5)
    topic = "relais/hubs/{}/config/reported"
    t.report(topic.format("h1"), json.dumps({"version": 4, "status": "applied"}).encode(), True)
    t.report(topic.format("h2"), json.dumps({"version": 3, "status": "rejected"}).encode(), True)
    assert t.status == {"h1": "pending", "h2": "pending"}  # old retained reports ignored
    t.report(topic.format("h1"), json.dumps({"version": 5, "status": "applied"}).encode(), False)
    threading.Timer(
        0.05,
        t.report,
        [
            topic.format("h2"),
            json.dumps(
                {"version": 5, "status": "rolled_back", "reason": "health check failed"}
            ).encode(),
            False,
        ],
    ).start()
    t.wait(["h1", "h2"], time.monotonic() + 5)
    assert t.status == {"h1": "applied", "h2": "rolled_back"}
    assert seen[-1] == ("h2", "rolled_back", "health check failed")
    t.expect("h3", 2)
    t.wait(["h3"], time.monotonic() + 0.05)
    assert t.status["h3"] == "timeout"
