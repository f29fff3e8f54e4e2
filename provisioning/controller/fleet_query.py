"""The fleet page's queries: search, filters, sort and paging done by the database.

Built on the registry's ``hubs`` table (one row per hub, its summary columns kept by the
ingest): a page of the fleet is one ``COUNT``, one ``SELECT ... LIMIT/OFFSET``, one
``GROUP BY`` for the summary cards and one for the map, whatever the fleet's size; no
per-hub loop in Python. The same SQL runs on SQLite and PostgreSQL.

A hub's state is computed in SQL exactly as ``provisioning.fleet.status_of`` does
(``never`` / ``offline`` / ``silent`` / ``online``), against a cutoff the caller gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlencode

from provisioning.fleet import STALE_AFTER_S, STATUSES, FleetRow, fleet_row
from provisioning.storage import Database

KINDS = ("mairie", "school", "clinic")
CONFIG_FILTERS = ("failed", "pending")
PER_PAGE = (25, 50, 100, 200)
MAP_LIMIT = 3000  # dots on the map; problems first (a 20,000-dot SVG is 3 MB)
# severity order: what needs a person first
STATE_RANK = {"offline": 0, "silent": 1, "never": 2, "online": 3}


def status_sql(cutoff: float) -> str:
    """SQL for a hub's state; ``cutoff`` = now - stale_after_s (a float we computed)."""
    return (
        "(CASE WHEN last_seen IS NULL AND state_ts IS NULL THEN 'never'"
        " WHEN coalesce(online, 0) = 0 THEN 'offline'"
        f" WHEN last_seen IS NULL OR last_seen < {float(cutoff)!r} THEN 'silent'"
        " ELSE 'online' END)"
    )


def _rank_sql(cutoff: float) -> str:
    whens = " ".join(f"WHEN '{s}' THEN {r}" for s, r in STATE_RANK.items())
    return f"(CASE {status_sql(cutoff)} {whens} END)"


# a config whose latest report is a failure of the version desired (fleet.config_status)
_FAILED_SQL = (
    "(reported_status IN ('rejected', 'rolled_back')"
    " AND coalesce(reported_version, 0) >= coalesce(desired_version, 0))"
)
_PENDING_SQL = (
    "(coalesce(desired_version, 0) > 0 AND (reported_version IS NULL OR reported_status IS NULL"
    " OR reported_version < desired_version))"
)


@dataclass(frozen=True)
class FleetQuery:
    """What the fleet page shows: from the URL's query string, back to links."""

    q: str = ""
    region: str = ""
    kind: str = ""
    state: str = ""
    config: str = ""
    sort: str = "state"
    desc: bool = False
    page: int = 1
    per: int = 50

    SORTS = ("state", "id", "name", "region", "kind", "seen", "config")

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> FleetQuery:
        """Lenient: an unknown value is dropped, never an error page."""

        def one(name: str) -> str:
            values = params.get(name) or [""]
            return values[0].strip()[:100]

        def number(name: str, default: int) -> int:
            try:
                return int(one(name) or default)
            except ValueError:
                return default

        per = number("per", 50)
        return cls(
            q=one("q"),
            region=one("region"),
            kind=one("kind") if one("kind") in KINDS else "",
            state=one("state") if one("state") in STATUSES else "",
            config=one("config") if one("config") in CONFIG_FILTERS else "",
            sort=one("sort") if one("sort") in cls.SORTS else "state",
            desc=one("desc") == "1",
            page=max(1, number("page", 1)),
            per=per if per in PER_PAGE else 50,
        )

    def params(self, **changes: Any) -> str:
        """The query string of this view with ``changes`` (defaults left out)."""
        new = replace(self, **changes)
        default = FleetQuery()
        out: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(new, f.name)
            if value != getattr(default, f.name):
                out.append((f.name, "1" if value is True else str(value)))
        return urlencode(out)

    def sort_link(self, column: str) -> str:
        """Clicking a header: sort by it, or flip the order when it already is."""
        desc = not self.desc if self.sort == column else column == "seen"
        return self.params(sort=column, desc=desc, page=1)

    def where(self, cutoff: float) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.q:
            like = (
                "%"
                + self.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            cols = ("id", "name", "region", "prefecture")
            one = "lower(coalesce({}, '')) LIKE ? ESCAPE '\\'"
            clauses.append("(" + " OR ".join(one.format(c) for c in cols) + ")")
            args += [like] * len(cols)
        if self.region:
            clauses.append("region = ?")
            args.append(self.region)
        if self.kind:
            clauses.append("kind = ?")
            args.append(self.kind)
        if self.state:
            clauses.append(f"{status_sql(cutoff)} = ?")
            args.append(self.state)
        if self.config == "failed":
            clauses.append(_FAILED_SQL)
        elif self.config == "pending":
            clauses.append(_PENDING_SQL)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def order_by(self, cutoff: float) -> str:
        direction = "DESC" if self.desc else "ASC"
        expr = {
            "state": _rank_sql(cutoff),
            "id": "id",
            "name": "lower(name)",
            "region": "coalesce(region, '')",
            "kind": "kind",
            "seen": "coalesce(last_seen, 0)",
            "config": "coalesce(desired_version, 0) - coalesce(reported_version, 0)",
        }[self.sort]
        return f" ORDER BY {expr} {direction}, id ASC"


@dataclass(frozen=True)
class MapPoint:
    id: str
    name: str
    lat: float
    lon: float
    status: str


@dataclass
class FleetView:
    query: FleetQuery
    rows: list[FleetRow]
    total: int  # hubs matching the filters
    fleet_size: int
    counts: dict[str, int]  # per state, whole fleet
    config_failed: int  # whole fleet
    regions: list[str]
    points: list[MapPoint] = field(default_factory=list)
    points_left_out: int = 0

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per))


def fleet_view(
    db: Database, fq: FleetQuery, now: float, stale_after_s: float = STALE_AFTER_S
) -> FleetView:
    cutoff = now - stale_after_s
    where, args = fq.where(cutoff)
    fq, rows, total = fleet_page_rows(db, fq, now, stale_after_s)
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in db.execute(
        f"SELECT {status_sql(cutoff)} AS s, count(*) FROM hubs GROUP BY s"
    ).fetchall():
        counts[str(status)] = int(n)
    failed = int(db.execute(f"SELECT count(*) FROM hubs WHERE {_FAILED_SQL}").fetchone()[0])
    regions = [
        str(r)
        for (r,) in db.execute(
            "SELECT DISTINCT region FROM hubs WHERE region IS NOT NULL ORDER BY region"
        ).fetchall()
    ]
    points, left_out = map_points(db, where, args, cutoff)
    return FleetView(
        fq, rows, total, sum(counts.values()), counts, failed, regions, points, left_out
    )


def fleet_page_rows(
    db: Database, fq: FleetQuery, now: float, stale_after_s: float = STALE_AFTER_S
) -> tuple[FleetQuery, list[FleetRow], int]:
    """One page of the filtered, sorted fleet: (the query with its page clamped to the
    last one, the rows, how many hubs match)."""
    cutoff = now - stale_after_s
    where, args = fq.where(cutoff)
    total = int(db.execute(f"SELECT count(*) FROM hubs{where}", args).fetchone()[0])
    pages = max(1, -(-total // fq.per))
    fq = replace(fq, page=min(fq.page, pages))
    rows = [
        fleet_row(r, now, stale_after_s)
        for r in db.query(
            f"SELECT * FROM hubs{where}{fq.order_by(cutoff)} LIMIT ? OFFSET ?",
            [*args, fq.per, (fq.page - 1) * fq.per],
        )
    ]
    return fq, rows, total


def fleet_json(
    db: Database, fq: FleetQuery, now: float, path: str = "/api/fleet.json"
) -> dict[str, Any]:
    """``/api/fleet.json``: the page ``fq`` selects (same parameters as the fleet page),
    with the match count and the links to the pages before and after (None at the ends);
    a script reads the whole fleet by following ``next``."""
    fq, rows, total = fleet_page_rows(db, fq, now)
    pages = max(1, -(-total // fq.per))

    def link(page: int) -> str:
        qs = fq.params(page=page)
        return f"{path}?{qs}" if qs else path

    return {
        "total": total,
        "page": fq.page,
        "pages": pages,
        "per": fq.per,
        "next": link(fq.page + 1) if fq.page < pages else None,
        "prev": link(fq.page - 1) if fq.page > 1 else None,
        "hubs": [r.as_json() for r in rows],
    }


def map_points(
    db: Database, where: str, args: list[Any], cutoff: float, limit: int = MAP_LIMIT
) -> tuple[list[MapPoint], int]:
    """The filtered hubs' positions, problems first, at most ``limit``; and how many
    placed hubs were left out."""
    placed = " AND lat IS NOT NULL AND lon IS NOT NULL"
    cond = (where + placed) if where else " WHERE" + placed[4:]
    n = int(db.execute(f"SELECT count(*) FROM hubs{cond}", args).fetchone()[0])
    rows = db.execute(
        f"SELECT id, name, lat, lon, {status_sql(cutoff)} AS s FROM hubs{cond}"
        f" ORDER BY {_rank_sql(cutoff)}, id LIMIT ?",
        [*args, limit],
    ).fetchall()
    pts = [MapPoint(str(i), str(nm), float(la), float(lo), str(s)) for i, nm, la, lo, s in rows]
    return pts, max(0, n - len(pts))


@dataclass(frozen=True)
class PushRecord:
    version: int
    created_at: float | None
    source: str


def push_history(db: Database, hub_id: str, limit: int = 20) -> list[PushRecord]:
    """The configs the centre recorded for a hub (enroll, pushes), newest first."""
    return [
        PushRecord(int(v), None if c is None else float(c), str(s or ""))
        for v, c, s in db.execute(
            "SELECT version, created_at, source FROM configs WHERE hub_id = ?"
            " ORDER BY version DESC LIMIT ?",
            [hub_id, limit],
        ).fetchall()
    ]


def hub_gaps(db: Database, hub_id: str, limit: int = 50) -> list[tuple[int, int]]:
    """One hub's open gaps in its health ``seq`` (not the whole fleet's)."""
    return [
        (int(a), int(b if b is not None else a))
        for a, b in db.execute(
            "SELECT first_seq, last_seq FROM gaps WHERE hub_id = ? AND stream = 'health'"
            " ORDER BY first_seq LIMIT ?",
            [hub_id, limit],
        ).fetchall()
    ]
