"""Search equals a plain reference filter: for generated queries (hypothesis), the offers the API
returns over all its pages (by cursor or numbered) are exactly those a straightforward Python filter
over the same offers selects, in the search's order (rank, then newest id), so it never returns an
offer the tenant may not see and never misses one it may; and its facets count those offers by
format, schedule, qualification and funding.

An offer fits where one of its sessions meets every session condition of the search (start window,
place, price ceiling, schedules), a session's own price and schedule counting where it has them
(migration 0026); the schedule facet counts an offer under each schedule of such a session."""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from runtime.db import tenant_transaction
from services.catalog import handlers, store
from services.catalog.domain import Acting, OfferIn
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider
from tests.platform import Platform

TENANTS = ["hellweg-hochsauerland", "westfaelisches-ruhrgebiet", "lueneburg"]
TOPICS = ["Schweißen", "Gabelstapler", "Buchhaltung", "Pflegehilfe", "Programmierung"]
CITIES = {"Dortmund": (51.514, 7.466), "Arnsberg": (51.396, 8.064), "Lüneburg": (53.251, 10.415),
          "Hamburg": (53.551, 9.994), "Kassel": (51.317, 9.5), "Meschede": (51.35, 8.283)}
FORMATS = ["presence", "online", "hybrid", "blended", "distance"]
SCHEDULES = ["full_time", "part_time", "evening", "weekend", "flexible"]
QUALIFICATIONS = ["certificate", "partial_qualification", "retraining", "advancement", "adaptation", "language"]
FUNDING = ["bildungsgutschein", "qcg", "aufstiegsbafoeg"]
PRICES = [None, 0, 250, 990, 4800]
RADII = [25, 50, 100, 200]
BASE = date(2031, 1, 1)
CERTIFIED = {TENANTS[0], TENANTS[1]}  # their providers are AZAV-certified: their offers may say qcg


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance on earthdistance's sphere (radius 6378.168 km)."""
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6378.168 * math.asin(math.sqrt(h))


def _session(rng: random.Random) -> dict:
    city = rng.choice(list(CITIES))
    session = _dated(city, rng.randint(0, 120))
    if rng.random() < 0.3:  # a date's own price or schedule (the course's own, or not)
        session["price_eur"] = rng.choice([0, 250, 990, 4800])
    if rng.random() < 0.3:
        session["schedule"] = rng.choice(SCHEDULES)
    return session


def _dated(city: str, day: int, **own) -> dict:
    lat, lon = CITIES[city]
    start = BASE + timedelta(days=day)
    return {"start": start.isoformat(), "end": (start + timedelta(days=5)).isoformat(),
            "location": {"zip": "00000", "city": city, "lat": lat, "lon": lon}} | own


def _kursnet_like(marker: str) -> list[tuple[dict, list[dict]]]:
    """Offers whose dates differ from the course, as the KURSNET fixture's, each (as written, as first
    written): a full-time course whose dates are part-time and cheaper, and a cheap course with a dear
    date only, both first written with dates that follow them; a course whose dates had their own
    price and schedule and no longer have."""
    return [
        ({"title": f"Programmierung Umschulung {marker}", "format": "presence", "schedule": "full_time",
          "price_eur": 35464.5, "hours": 1200, "qualification": "retraining",
          "sessions": [_dated("Dortmund", 10), _dated("Dortmund", 40, schedule="part_time", price_eur=29528.36),
                       _dated("Kassel", 70, schedule="part_time", price_eur=33746.7)]},
         [_dated("Dortmund", 10), _dated("Kassel", 70)]),
        ({"title": f"Buchhaltung kompakt {marker}", "format": "online", "schedule": "evening", "price_eur": 250,
          "hours": 40, "qualification": "adaptation",
          "sessions": [_dated("Hamburg", 20, price_eur=4800, schedule="weekend")]},
         [_dated("Hamburg", 20)]),
        ({"title": f"Gabelstapler Grundkurs {marker}", "format": "presence", "schedule": "part_time",
          "price_eur": 990, "hours": 16, "qualification": "certificate", "sessions": [_dated("Arnsberg", 30)]},
         [_dated("Arnsberg", 30, price_eur=0, schedule="weekend"), _dated("Meschede", 60, schedule="evening")]),
    ]


@pytest.fixture(scope="module")
def corpus(platform: Platform) -> dict:
    """About 40 offers across the three networks: every format, schedule, visibility and status mixed;
    dates with a price or schedule of their own; hours unknown on some; qcg where the provider may say
    it; the marker in the title of some and in every description (two ranks for a text with it)."""
    rng = random.Random(6)
    marker = "prop" + uuid.uuid4().hex[:8]
    offers, providers = [], []
    for t, tenant in enumerate(TENANTS):
        with platform.client("catalog", f"{tenant}-provider") as api:
            azav = {"certified": True, "valid_until": "2040-12-31"} if tenant in CERTIFIED else None
            provider = api.post("/v1/providers", json={"name": f"Prüfstand {tenant}", "emails": ["p@p.example"],
                                                       "azav": azav})
            assert provider.status_code == 201, provider.text
            provider_id = provider.json()["id"]
            providers.append(provider_id)
            made = [{"title": f"{rng.choice(TOPICS)} Lehrgang" + (f" {marker}" if rng.random() < 0.5 else ""),
                     "format": rng.choice(FORMATS), "schedule": rng.choice(SCHEDULES),
                     "price_eur": rng.choice(PRICES), "hours": rng.choice([None, 16, 40, 120, 480]),
                     "qualification": rng.choice(QUALIFICATIONS),
                     "sessions": [_session(rng) for _ in range(rng.randint(1, 3))]} for _ in range(12)]
            first_written = {}
            if t == 0:
                for made_one, sessions in _kursnet_like(marker):
                    first_written[len(made)] = sessions
                    made.append(made_one)
            for i, made_one in enumerate(made):
                others = [x for x in TENANTS if x != tenant]
                visibility = rng.choice([{"scope": "home", "networks": []}, {"scope": "all", "networks": []},
                                         {"scope": "networks", "networks": rng.sample(others, rng.randint(1, 2))}])
                qcg = tenant in CERTIFIED and (made_one["hours"] or 0) > 120 and rng.random() < 0.6
                body = made_one | {
                    "provider_id": provider_id, "external_id": f"{marker}-{tenant}-{i}",
                    "description": f"Beschreibung {marker}", "skills": [],
                    "funding": {"bildungsgutschein": rng.random() < 0.5, "qcg": qcg,
                                "aufstiegsbafoeg": rng.random() < 0.3},
                    "visibility": visibility, "language": "de",
                    "status": "draft" if rng.random() < 0.15 else "published",
                }
                if i in first_written:  # the hand-made ones: seen by every network, and written twice
                    body |= {"visibility": {"scope": "all", "networks": []}, "status": "published"}
                created = api.post("/v1/offers", json=body | {"sessions": first_written.get(i, body["sessions"])})
                assert created.status_code == 201, created.text
                state = created.json()
                if i in first_written:
                    changed = api.put(f"/v1/offers/{state['id']}", json=body)
                    assert changed.status_code == 200, changed.text
                if state["status"] == "published" and i not in first_written and rng.random() < 0.1:
                    state = api.post(f"/v1/offers/{state['id']}/withdraw").json()
                offers.append(body | {"id": state["id"], "tenant": tenant, "status": state["status"]})
    return {"marker": marker, "offers": offers, "providers": providers}


def _visible(offer: dict, tenant: str) -> bool:
    scope = offer["visibility"]["scope"]
    shared = scope == "all" or (scope == "networks" and tenant in offer["visibility"]["networks"])
    return offer["status"] == "published" and (offer["tenant"] == tenant or shared)


def _fitting_sessions(offer: dict, query: dict) -> list[dict]:
    """The offer's sessions that meet every session condition: start window, place, price, schedule."""
    def fits(s: dict) -> bool:
        start = date.fromisoformat(s["start"])
        if query["start_from"] and start < query["start_from"]:
            return False
        if query["start_to"] and start > query["start_to"]:
            return False
        if query["near"] and offer["format"] not in ("online", "distance"):
            city, radius = query["near"]
            if _km(CITIES[city], (s["location"]["lat"], s["location"]["lon"])) > radius:
                return False
        price = s.get("price_eur", offer["price_eur"])  # the date's own, else the course's
        if query["max_price"] is not None and (price or 0) > query["max_price"]:  # unknown: 0
            return False
        return not query["schedules"] or s.get("schedule", offer["schedule"]) in query["schedules"]

    return [s for s in offer["sessions"] if fits(s)]


def _reference(corpus: dict, query: dict) -> dict[str, list[dict]]:
    """The plain filter the search must agree with: each offer found, with its fitting sessions."""
    found = {}
    for offer in corpus["offers"]:
        if not _visible(offer, query["tenant"]):
            continue
        if query["provider"] is not None and offer["provider_id"] != corpus["providers"][query["provider"]]:
            continue
        if query["topic"] and not offer["title"].startswith(query["topic"]):
            continue
        if query["formats"] and offer["format"] not in query["formats"]:
            continue
        if query["qualifications"] and offer["qualification"] not in query["qualifications"]:
            continue
        if any(not offer["funding"][f] for f in query["funding"]):
            continue
        hours = offer["hours"]  # unknown hours fit no bound on them
        if query["min_hours"] is not None and (hours is None or hours < query["min_hours"]):
            continue
        if query["max_hours"] is not None and (hours is None or hours > query["max_hours"]):
            continue
        if sessions := _fitting_sessions(offer, query):
            found[offer["id"]] = sessions
    return found


def _pages(client: httpx.Client, params: dict, numbered: bool) -> tuple[list[dict], int]:
    """Every page's items, following next_cursor or asking page 1, 2, … until a short one."""
    items, cursor, total = [], None, None
    for number in range(1, 30):
        ask = params | ({"page": number} if numbered else {"cursor": cursor} if cursor else {})
        page = client.get("/v1/offers", params=ask)
        assert page.status_code == 200, page.text
        body = page.json()
        total = body["total"] if total is None else total
        items += body["items"]
        cursor = body["next_cursor"]
        if (numbered and len(body["items"]) < params["page_size"]) or (not numbered and not cursor):
            break
    return items, total


def _search_params(corpus: dict, query: dict) -> dict:
    params = {"page_size": query["page_size"], "format": query["formats"], "schedule": query["schedules"],
              "qualification": query["qualifications"], "funding": query["funding"]}
    if query["text"]:
        params["q"] = " ".join(filter(None, [query["topic"], corpus["marker"]]))
    if query["provider"] is not None:
        params["provider_id"] = corpus["providers"][query["provider"]]
    for key, name in (("max_price", "max_price_eur"), ("min_hours", "min_hours"), ("max_hours", "max_hours"),
                      ("start_from", "start_from"), ("start_to", "start_to")):
        if query[key] is not None:
            params[name] = str(query[key])
    if query["near"]:
        lat, lon = CITIES[query["near"][0]]
        params |= {"lat": lat, "lon": lon, "radius_km": query["near"][1]}
    return params


def _no_text_on_own_offers(query: dict) -> dict:
    """Without a text the search finds every offer of the network: other tests' too. One of this
    corpus's providers keeps it to this test's offers."""
    if not query["text"]:
        query |= {"topic": None, "provider": 0 if query["provider"] is None else query["provider"]}
    return query


queries = st.fixed_dictionaries({
    "tenant": st.sampled_from(TENANTS),
    "text": st.booleans(),
    "topic": st.none() | st.sampled_from(TOPICS),
    "provider": st.none() | st.integers(0, 2),
    "formats": st.lists(st.sampled_from(FORMATS), max_size=2, unique=True),
    "schedules": st.lists(st.sampled_from(SCHEDULES), max_size=2, unique=True),
    "qualifications": st.lists(st.sampled_from(QUALIFICATIONS), max_size=2, unique=True),
    "funding": st.lists(st.sampled_from(FUNDING), max_size=2, unique=True),
    "max_price": st.none() | st.sampled_from([0, 300, 1000, 30000]),
    "min_hours": st.none() | st.sampled_from([40, 121]),
    "max_hours": st.none() | st.sampled_from([40, 120, 480]),
    "start_from": st.none() | st.integers(0, 120).map(lambda d: BASE + timedelta(days=d)),
    "start_to": st.none() | st.integers(0, 120).map(lambda d: BASE + timedelta(days=d)),
    "near": st.none() | st.tuples(st.sampled_from(list(CITIES)), st.sampled_from(RADII)),
    "page_size": st.sampled_from([3, 7]),
    "numbered": st.booleans(),
}).map(_no_text_on_own_offers)

NOTHING = {"tenant": TENANTS[0], "text": True, "topic": None, "provider": None, "formats": [], "schedules": [],
           "qualifications": [], "funding": [], "max_price": None, "min_hours": None, "max_hours": None,
           "start_from": None, "start_to": None, "near": None, "page_size": 7, "numbered": False}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries)
@example(query=NOTHING | {  # a text with formats: the formats checked on the text's hits (migration 0020)
    "topic": TOPICS[0], "formats": ["online", "hybrid"]})
@example(query=NOTHING | {  # and near a place: the place's own clause still reads the formats (migration 0020)
    "tenant": TENANTS[2], "topic": None, "formats": ["online", "presence"], "near": ("Lüneburg", 50)})
@example(query=NOTHING | {"max_price": 30000})  # a part-time date at 29,528.36 of a course at 35,464.50 (0026)
@example(query=NOTHING | {"max_price": 300})  # a course at 250 whose only date costs 4,800 (0026)
@example(query=NOTHING | {"schedules": ["weekend"], "max_price": 0})  # dates that had their own terms (0026)
@example(query=NOTHING | {"schedules": ["part_time"], "text": False, "provider": 0,  # the course's dates (0026)
                          "near": ("Kassel", 25)})
def test_search_equals_the_reference_filter(platform: Platform, corpus: dict, query: dict) -> None:
    if query["near"]:  # keep clear of a radius's very edge, where float rounding may differ
        center, radius = CITIES[query["near"][0]], query["near"][1]
        assume(all(abs(_km(center, c) - radius) > 1 for c in CITIES.values()))
    params = _search_params(corpus, query)
    with platform.client("catalog", f"{query['tenant']}-employer") as api:
        items, total = _pages(api, params, query["numbered"])
        with_facets = api.get("/v1/offers", params=params | {"facets": "true"})
    expected = _reference(corpus, query)
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), "a page repeated an offer"
    assert set(ids) == set(expected)
    assert total == len(expected)
    # best first, the newest first among equals (0007): a text's words all in the title rank 1, else 0.5
    order = [(item["rank"], uuid.UUID(item["id"])) for item in items]
    assert order == sorted(order, reverse=True)
    found = [o for o in corpus["offers"] if o["id"] in expected]
    assert {item["id"]: item["rank"] for item in items} == {
        o["id"]: 0.0 if not query["text"] else 1.0 if corpus["marker"] in o["title"] else 0.5 for o in found}
    # the facets count what the reference finds, each kind of funding where it is granted, each
    # schedule one of an offer's fitting sessions has (its own, else the offer's)
    assert with_facets.status_code == 200, with_facets.text
    assert with_facets.json()["facets"] == {
        "format": Counter(o["format"] for o in found),
        "schedule": Counter(schedule for o in found
                            for schedule in {s.get("schedule", o["schedule"]) for s in expected[o["id"]]}),
        "qualification": Counter(o["qualification"] for o in found),
        "funding": Counter(kind for o in found for kind, granted in o["funding"].items() if granted)}


async def test_a_date_removed_alone_no_longer_finds_its_offer(catalog_pool: asyncpg.Pool) -> None:
    """An open-Qcat DELETE of a dated instance removes that session alone (catalog.importing): its own
    price and schedule no longer find the offer, though a price or schedules alone are decided by what
    the offer records of its sessions (migration 0026). In-process, on a catalog database of its own."""
    tenant = "lueneburg"
    async with tenant_transaction(catalog_pool, tenant) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, tenant)
        offer_id = await store.insert_offer(conn, tenant, OfferIn.model_validate({
            "provider_id": provider_id, "title": "Umschulung", "format": "online", "schedule": "full_time",
            "qualification": "retraining", "price_eur": 35464.5, "status": "published",
            "sessions": [{"start": "2031-02-01"}, {"external_id": "teilzeit", "start": "2031-03-01",
                                                    "schedule": "part_time", "price_eur": 29528.36}]}))

    async def found(**filters) -> bool:
        async with tenant_transaction(catalog_pool, tenant) as conn:
            return [o["id"] for o in (await handlers.search_offers(conn, store.OfferQuery(**filters)))["items"]] \
                == [str(offer_id)]

    assert await found(schedules=["part_time"]) and await found(max_price_eur=30000)
    async with tenant_transaction(catalog_pool, tenant) as conn:
        await store.set_acting(conn, Acting(tenant, "operator-cli", None))
        await conn.execute("DELETE FROM offer_sessions WHERE offer_id = $1 AND external_id = 'teilzeit'", offer_id)
    assert not await found(schedules=["part_time"]) and not await found(max_price_eur=30000)
    assert await found(schedules=["full_time"], max_price_eur=35464.5)


async def test_without_a_text_a_page_by_schedule_walks_to_the_counts_page(catalog_pool: asyncpg.Pool) -> None:
    """Without a text and with schedules, a page of many hits is walked in two parts merged: the
    offers by their own schedule, those whose sessions differ (migration 0026). Each page, numbered or
    after the cursor, is the one the count gives from its own read of all hits (0021)."""
    tenant, rng = "lueneburg", random.Random(26)
    async with tenant_transaction(catalog_pool, tenant) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, tenant)
        for n in range(80):
            sessions = []
            for _ in range(rng.randint(1, 3)):
                session = {"start": (BASE + timedelta(days=rng.randint(0, 120))).isoformat()}
                if rng.random() < 0.3:
                    session["schedule"] = rng.choice(SCHEDULES)
                if rng.random() < 0.3:
                    session["price_eur"] = rng.choice([0, 250, 990])
                sessions.append(session)
            await store.insert_offer(conn, tenant, OfferIn.model_validate({
                "provider_id": provider_id, "title": f"Kurs {n}", "format": rng.choice(["online", "distance"]),
                "schedule": rng.choice(SCHEDULES), "qualification": "certificate", "price_eur": rng.choice(PRICES),
                "sessions": sessions, "status": "published"}))

    async def pages(walked: bool, query: store.OfferQuery) -> list[list[str]]:
        found = []
        async with tenant_transaction(catalog_pool, tenant) as conn:
            for _ in range(30):
                if walked:
                    page = await store.search_offers(conn, query)
                else:
                    _, page = await store.count_and_page(conn, query)
                found.append([str(r["id"]) for r in page])
                if len(page) < query.page_size:
                    return found
                query = replace(query, skip=0, after=(page[-1]["rank"], page[-1]["id"]))
        return found

    wheres = [{"schedules": ["part_time"]}, {"schedules": ["evening", "weekend"]},
              {"schedules": ["part_time"], "formats": ["online"]}, {"schedules": ["full_time"], "max_price_eur": 300},
              {"schedules": ["weekend", "flexible"], "start_from": BASE + timedelta(days=40)}]
    for where, (size, skip) in itertools.product(wheres, [(4, 0), (4, 8), (30, 0)]):
        query = store.OfferQuery(page_size=size, skip=skip, **where)
        counted = await pages(False, query)
        assert await pages(True, query) == counted, (where, size, skip)
        assert sum(map(len, counted)) > 0, where
