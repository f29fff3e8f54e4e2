"""Togo's outline and regions, bundled (no online tiles), and the map projection.

The outline is a simplified polygon of the national border (lon, lat), after the public
domain Natural Earth 1:110m boundaries: about 6.1–11.1°N and -0.15–1.8°E. Hubs enrolled
without coordinates are placed near their region's capital, spread a little by id so
that hubs of one region do not sit on one pixel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

TOGO_OUTLINE: tuple[tuple[float, float], ...] = (
    (1.8652, 6.1422),
    (1.0601, 5.9288),
    (0.8369, 6.2800),
    (0.5704, 6.9144),
    (0.4910, 7.4117),
    (0.7120, 8.3125),
    (0.4612, 8.6772),
    (0.3659, 9.4650),
    (0.3676, 10.1912),
    (-0.0498, 10.7069),
    (0.0238, 11.0187),
    (0.8996, 10.9973),
    (0.7723, 10.4708),
    (1.0778, 10.1756),
    (1.4251, 9.8254),
    (1.4630, 9.3346),
    (1.6645, 9.1286),
    (1.6190, 6.8320),
    (1.8652, 6.1422),
)

# Region -> (capital, lon, lat)
REGIONS: dict[str, tuple[str, float, float]] = {
    "Maritime": ("Lomé", 1.2228, 6.1375),
    "Plateaux": ("Atakpamé", 1.1260, 7.5270),
    "Centrale": ("Sokodé", 1.1333, 8.9833),
    "Kara": ("Kara", 1.1861, 9.5511),
    "Savanes": ("Dapaong", 0.2078, 10.8622),
}


def default_position(hub_id: str, region: str | None) -> tuple[float | None, float | None]:
    """(lat, lon) near the region's capital, jittered by a hash of the id (stable)."""
    if region is None:
        return None, None
    match = next((v for k, v in REGIONS.items() if k.lower() == region.lower()), None)
    if match is None:
        return None, None
    _, lon, lat = match
    h = hashlib.sha256(hub_id.encode()).digest()
    dx = (h[0] / 255 - 0.5) * 0.5
    dy = (h[1] / 255 - 0.5) * 0.5
    return round(lat + dy + (0.15 if region == "Maritime" else 0), 4), round(lon + dx, 4)


@dataclass(frozen=True)
class Projection:
    """Equirectangular projection of Togo's bounding box onto an SVG viewport."""

    width: float = 330
    height: float = 560
    pad: float = 14
    lon0: float = -0.2
    lon1: float = 2.75  # room east of the border for city labels and the legend
    lat0: float = 5.85
    lat1: float = 11.2

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        sx = (self.width - 2 * self.pad) / (self.lon1 - self.lon0)
        sy = (self.height - 2 * self.pad) / (self.lat1 - self.lat0)
        s = min(sx, sy)
        x = self.pad + (lon - self.lon0) * s
        y = self.pad + (self.lat1 - lat) * s
        return round(x, 1), round(y, 1)

    def outline_path(self) -> str:
        pts = [self.xy(lon, lat) for lon, lat in TOGO_OUTLINE]
        return "M" + " L".join(f"{x},{y}" for x, y in pts) + " Z"
