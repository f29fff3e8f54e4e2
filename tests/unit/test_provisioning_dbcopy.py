"""``hubctl db migrate`` and ``hubctl db copy``: a pilot's SQLite registry moves to a real
PostgreSQL server (started by the tests) and back, verified row for row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hub_agent.sessions.service import Redemption
from lab.postgres import PgServer
from provisioning import content_catalogue as catalogue
from provisioning import registry, vouchers
from provisioning.content_catalogue import Target
from provisioning.registry import Batch, HubRecord
from provisioning.storage import Database

BIN = Path(sys.executable).parent


def hubctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hubctl"), *args], capture_output=True, text=True)


def pilot(db: Database) -> None:
    """A small registry with a row in every table the centre writes."""
    registry.register_many(db, [HubRecord(f"tg-h{i}", "school", f"H{i}", "Kara") for i in (1, 2)])
    registry.upsert_hub(db, HubRecord("tg-h1", "school", "H1", "Kara", groups=("pilot",)), "fp")
    registry.record_desired(db, "tg-h1", 1, {"version": 1, "é": "ünïcode"}, "enroll")
    batch = Batch(
        health=[("tg-h1", s, 1000.0 + s, f'{{"seq":{s},"cpu":0.5}}') for s in (1, 2, 5)],
        events=[("tg-h1", 1, 1001.0, "agent_start", '{"seq":1}')],
        hub_updates={"tg-h1": {"online": 1, "last_seq": 5, "last_seen": 1005.25}},
        gaps_add=[("tg-h1", "health", 3, 4, 1006.0)],
    )
    registry.write_batch(db, batch)
    vouchers.reconcile(db, [Redemption("tg-h2", "ABCDEFGHJKMN", "dev-1", 1007.5, "heure")])
    item = catalogue.validate_item(
        {"id": "guide", "title": {"fr": "Guide"}, "kind": "pdf", "url": "http://x/g.pdf",
         "size": 10, "sha256": "0" * 64}
    )  # fmt: skip
    catalogue.add_item(db, item)
    catalogue.assign(db, "guide", [Target("region", "Kara")])


def snapshot(db: Database) -> dict[str, Any]:
    hubs = registry.all_hubs(db)
    return {
        "hubs": hubs,
        "seq": registry.seq_counts(db),
        "gaps": registry.open_gaps(db),
        "config": registry.latest_config(db, "tg-h1"),
        "findings": vouchers.findings_for(db),
        "manifest": [i.id for i in catalogue.manifest_for(db, "tg-h2")],
    }


def test_migrate_then_copy_sqlite_to_postgresql_and_back(
    tmp_path: Path, pg_server: PgServer
) -> None:
    pg = pg_server.new_database("copy")
    r = hubctl("--state", str(tmp_path / "c"), "--db", pg, "db", "migrate")
    assert r.returncode == 0, r.stderr
    assert "applied registry: m001_tables" in r.stdout and "(postgresql," in r.stdout
    r = hubctl("--state", str(tmp_path / "c"), "--db", pg, "db", "migrate")
    assert r.returncode == 0 and "0 step(s) applied now" in r.stdout  # idempotent

    src_url = f"sqlite://{tmp_path}/pilot/registry.db"
    src = registry.open_registry(src_url)
    pilot(src)
    before = snapshot(src)

    r = hubctl("db", "copy", src_url, pg)
    assert r.returncode == 0, r.stderr
    assert "health" in r.stdout and "verified" in r.stdout
    assert snapshot(registry.open_registry(pg)) == before

    again = hubctl("db", "copy", src_url, pg)  # never into a registry that has rows
    assert again.returncode == 1 and "not empty" in again.stderr

    back_url = f"sqlite://{tmp_path}/back/registry.db"
    r = hubctl("db", "copy", pg, back_url)
    assert r.returncode == 0, r.stderr
    assert snapshot(registry.open_registry(back_url)) == before


def test_copy_notices_a_row_that_differs(tmp_path: Path, pg_server: PgServer) -> None:
    from provisioning import dbcopy

    src = registry.open_registry(f"sqlite://{tmp_path}/a.db")
    pilot(src)
    dst = registry.open_registry(pg_server.new_database("diff"))
    dbcopy.copy(src, dst)
    dst.execute("UPDATE health SET data = '{}' WHERE seq = 2")
    cols = ["hub_id", "seq", "ts", "data"]
    assert dbcopy.check(src, "health", cols).rows == dbcopy.check(dst, "health", cols).rows
    assert dbcopy.check(src, "health", cols) != dbcopy.check(dst, "health", cols)
