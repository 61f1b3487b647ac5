"""Places for matching: a grid of half-degree cells that both sides index (an offer's session lies
in one cell; a demand covers the cells of its distance box), bounding boxes, and the region
(district) of a postcode for the gap report. Plain functions; the postcode and town data load on
first use (never at import)."""

from __future__ import annotations

import math
from functools import lru_cache

from runtime import places
from runtime.places import EARTH_RADIUS_KM, haversine_km

KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180  # about 111.2 km along a meridian
CELL_DEGREES = 0.5          # about 55 km north-south, 34 km east-west in Germany
WIDE = -1                   # a demand whose box spans more cells than this is indexed as "anywhere"
MAX_CELLS = 400
REGION_MIN_POPULATION = 50_000  # the towns a region is named after (Ober- and larger Mittelzentren)


def cell(lat: float, lon: float) -> int:
    """The grid cell of a point: a single int, so a btree finds a cell's sessions."""
    return (math.floor(lat / CELL_DEGREES) + 360) * 10_000 + (math.floor(lon / CELL_DEGREES) + 720)


def box(lat: float, lon: float, radius_km: float) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) around a point: every point within radius_km lies inside."""
    dlat = radius_km / KM_PER_DEGREE
    lat_min, lat_max = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    widest = max(abs(lat_min), abs(lat_max))
    cos = math.cos(math.radians(widest))
    if cos < 1e-6 or radius_km / (KM_PER_DEGREE * cos) >= 180:
        return lat_min, lat_max, -180.0, 180.0
    dlon = radius_km / (KM_PER_DEGREE * cos)
    return lat_min, lat_max, max(-180.0, lon - dlon), min(180.0, lon + dlon)


def cells_of_box(lat_min: float, lat_max: float, lon_min: float, lon_max: float) -> list[int] | None:
    """The cells a box touches, or None when they are too many to list (index it as anywhere)."""
    rows = range(math.floor(lat_min / CELL_DEGREES), math.floor(lat_max / CELL_DEGREES) + 1)
    cols = range(math.floor(lon_min / CELL_DEGREES), math.floor(lon_max / CELL_DEGREES) + 1)
    if len(rows) * len(cols) > MAX_CELLS:
        return None
    return [(r + 360) * 10_000 + (c + 720) for r in rows for c in cols]


@lru_cache(maxsize=1)
def _region_towns() -> tuple[list[str], list[tuple[float, float]]]:
    towns = sorted((t for t in places.gazetteer().towns if t.population >= REGION_MIN_POPULATION),
                   key=lambda t: t.name)
    return [t.name for t in towns], [(t.lat, t.lon) for t in towns]


@lru_cache(maxsize=20_000)
def region_of_point(lat: float, lon: float) -> str:
    """The town of at least 50,000 inhabitants nearest to a point: the region a place belongs to."""
    names, points = _region_towns()
    best = min(range(len(points)), key=lambda i: haversine_km(lat, lon, *points[i]))
    return names[best]


def region(zip_code: str | None, lat: float | None, lon: float | None) -> str | None:
    """The region (district) of a place, from its postcode's centre, else from its coordinates.

    No package here maps a postcode to its Landkreis, so a region is named after the nearest
    town of 50,000 or more (Lüneburg for 21335, Arnsberg for 59821): stable, German, and as
    coarse as a district."""
    point = places.gazetteer().postcode(zip_code)
    if point is None and lat is not None and lon is not None:
        point = (lat, lon)
    if point is None:
        return None
    return region_of_point(round(point[0], 3), round(point[1], 3))
