"""Search equals a plain reference filter: for generated queries (hypothesis), the offers the API
returns over all its cursor pages are exactly those a straightforward Python filter over the same
offers selects, so it never returns an offer the tenant may not see and never misses one it may;
and its facets count those offers by format, schedule, qualification and funding."""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from datetime import date, timedelta

import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.platform import Platform

TENANTS = ["hellweg-hochsauerland", "westfaelisches-ruhrgebiet", "lueneburg"]
TOPICS = ["Schweißen", "Gabelstapler", "Buchhaltung", "Pflegehilfe", "Programmierung"]
CITIES = {"Dortmund": (51.514, 7.466), "Arnsberg": (51.396, 8.064), "Lüneburg": (53.251, 10.415),
          "Hamburg": (53.551, 9.994), "Kassel": (51.317, 9.5), "Meschede": (51.35, 8.283)}
FORMATS = ["presence", "online", "hybrid", "blended", "distance"]
SCHEDULES = ["full_time", "part_time", "evening", "weekend", "flexible"]
QUALIFICATIONS = ["certificate", "partial_qualification", "retraining", "advancement", "adaptation", "language"]
RADII = [25, 50, 100, 200]
BASE = date(2031, 1, 1)


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance on earthdistance's sphere (radius 6378.168 km)."""
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6378.168 * math.asin(math.sqrt(h))


@pytest.fixture(scope="module")
def corpus(platform: Platform) -> dict:
    """36 offers across the three networks: every format, schedule, visibility and status mixed."""
    rng = random.Random(6)
    marker = "prop" + uuid.uuid4().hex[:8]
    offers = []
    for tenant in TENANTS:
        with platform.client("catalog", f"{tenant}-provider") as api:
            provider = api.post("/v1/providers", json={"name": f"Prüfstand {tenant}", "emails": ["p@p.example"]})
            provider_id = provider.json()["id"]
            for i in range(12):
                fmt = rng.choice(FORMATS)
                sessions = []
                for _ in range(rng.randint(1, 2)):
                    city = rng.choice(list(CITIES))
                    lat, lon = CITIES[city]
                    start = BASE + timedelta(days=rng.randint(0, 120))
                    sessions.append({"start": start.isoformat(), "end": (start + timedelta(days=5)).isoformat(),
                                     "location": {"zip": "00000", "city": city, "lat": lat, "lon": lon}})
                others = [t for t in TENANTS if t != tenant]
                visibility = rng.choice([{"scope": "home", "networks": []}, {"scope": "all", "networks": []},
                                         {"scope": "networks", "networks": rng.sample(others, rng.randint(1, 2))}])
                body = {
                    "provider_id": provider_id, "external_id": f"{marker}-{tenant}-{i}",
                    "title": f"{rng.choice(TOPICS)} Lehrgang {marker}", "description": f"Beschreibung {marker}",
                    "skills": [], "qualification": rng.choice(QUALIFICATIONS), "format": fmt,
                    "schedule": rng.choice(SCHEDULES), "hours": rng.choice([16, 40, 120, 480]),
                    "price_eur": rng.choice([None, 0, 250, 990, 4800]),
                    "funding": {"bildungsgutschein": rng.random() < 0.5, "qcg": False,
                                "aufstiegsbafoeg": rng.random() < 0.3},
                    "sessions": sessions, "visibility": visibility, "language": "de",
                    "status": "draft" if rng.random() < 0.15 else "published",
                }
                created = api.post("/v1/offers", json=body)
                assert created.status_code == 201, created.text
                state = created.json()
                if state["status"] == "published" and rng.random() < 0.1:
                    state = api.post(f"/v1/offers/{state['id']}/withdraw").json()
                offers.append(body | {"id": state["id"], "tenant": tenant, "status": state["status"]})
    return {"marker": marker, "offers": offers}


def _visible(offer: dict, tenant: str) -> bool:
    scope = offer["visibility"]["scope"]
    shared = scope == "all" or (scope == "networks" and tenant in offer["visibility"]["networks"])
    return offer["status"] == "published" and (offer["tenant"] == tenant or shared)


def _reference(offers: list[dict], query: dict) -> set[str]:
    """The plain filter the search must agree with."""
    found = set()
    for offer in offers:
        if not _visible(offer, query["tenant"]):
            continue
        if query["topic"] and not offer["title"].startswith(query["topic"]):
            continue
        if query["formats"] and offer["format"] not in query["formats"]:
            continue
        if query["schedules"] and offer["schedule"] not in query["schedules"]:
            continue
        if query["qualifications"] and offer["qualification"] not in query["qualifications"]:
            continue
        if any(not offer["funding"][f] for f in query["funding"]):
            continue
        if query["max_price"] is not None and (offer["price_eur"] or 0) > query["max_price"]:
            continue
        if query["min_hours"] is not None and offer["hours"] < query["min_hours"]:
            continue

        def session_fits(s: dict, offer: dict = offer) -> bool:
            start = date.fromisoformat(s["start"])
            if query["start_from"] and start < query["start_from"]:
                return False
            if query["start_to"] and start > query["start_to"]:
                return False
            if query["near"] and offer["format"] not in ("online", "distance"):
                city, radius = query["near"]
                loc = s["location"]
                return _km(CITIES[city], (loc["lat"], loc["lon"])) <= radius
            return True

        if any(session_fits(s) for s in offer["sessions"]):
            found.add(offer["id"])
    return found


def _all_pages(client: httpx.Client, params: dict) -> tuple[list[str], int]:
    ids, cursor, total = [], None, None
    for _ in range(20):
        page = client.get("/v1/offers", params=params | ({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        body = page.json()
        total = body["total"] if total is None else total
        ids += [o["id"] for o in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    return ids, total


queries = st.fixed_dictionaries({
    "tenant": st.sampled_from(TENANTS),
    "topic": st.none() | st.sampled_from(TOPICS),
    "formats": st.lists(st.sampled_from(FORMATS), max_size=2, unique=True),
    "schedules": st.lists(st.sampled_from(SCHEDULES), max_size=2, unique=True),
    "qualifications": st.lists(st.sampled_from(QUALIFICATIONS), max_size=2, unique=True),
    "funding": st.lists(st.sampled_from(["bildungsgutschein", "aufstiegsbafoeg"]), max_size=2, unique=True),
    "max_price": st.none() | st.sampled_from([0, 300, 1000]),
    "min_hours": st.none() | st.sampled_from([40, 121]),
    "start_from": st.none() | st.integers(0, 120).map(lambda d: BASE + timedelta(days=d)),
    "start_to": st.none() | st.integers(0, 120).map(lambda d: BASE + timedelta(days=d)),
    "near": st.none() | st.tuples(st.sampled_from(list(CITIES)), st.sampled_from(RADII)),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries)
@example(query={  # a text with formats: the formats checked on the text's hits (migration 0020)
    "tenant": TENANTS[0], "topic": TOPICS[0], "formats": ["online", "hybrid"], "schedules": [], "qualifications": [],
    "funding": [], "max_price": None, "min_hours": None, "start_from": None, "start_to": None, "near": None})
@example(query={  # and near a place: the place's own clause still reads the formats (migration 0020)
    "tenant": TENANTS[2], "topic": None, "formats": ["online", "presence"], "schedules": [], "qualifications": [],
    "funding": [], "max_price": None, "min_hours": None, "start_from": None, "start_to": None,
    "near": ("Lüneburg", 50)})
def test_search_equals_the_reference_filter(platform: Platform, corpus: dict, query: dict) -> None:
    if query["near"]:  # keep clear of a radius's very edge, where float rounding may differ
        center, radius = CITIES[query["near"][0]], query["near"][1]
        assume(all(abs(_km(center, c) - radius) > 1 for c in CITIES.values()))
    params = {"q": " ".join(filter(None, [query["topic"], corpus["marker"]])), "page_size": 7,
              "format": query["formats"], "schedule": query["schedules"], "qualification": query["qualifications"],
              "funding": query["funding"]}
    for key, name in (("max_price", "max_price_eur"), ("min_hours", "min_hours"), ("start_from", "start_from"),
                      ("start_to", "start_to")):
        if query[key] is not None:
            params[name] = str(query[key])
    if query["near"]:
        lat, lon = CITIES[query["near"][0]]
        params |= {"lat": lat, "lon": lon, "radius_km": query["near"][1]}
    with platform.client("catalog", f"{query['tenant']}-employer") as api:
        ids, total = _all_pages(api, params)
        with_facets = api.get("/v1/offers", params=params | {"facets": "true"})
    expected = _reference(corpus["offers"], query)
    assert len(ids) == len(set(ids)), "a cursor page repeated an offer"
    assert set(ids) == expected
    assert total == len(expected)
    # the facets count what the reference finds, each kind of funding where it is granted
    found = [o for o in corpus["offers"] if o["id"] in expected]
    assert with_facets.status_code == 200, with_facets.text
    assert with_facets.json()["facets"] == {
        "format": Counter(o["format"] for o in found), "schedule": Counter(o["schedule"] for o in found),
        "qualification": Counter(o["qualification"] for o in found),
        "funding": Counter(kind for o in found for kind, granted in o["funding"].items() if granted)}
