"""A search by place without a text takes one of two ways (migration 0014): where the box around the
circle holds few sessions, the offers are found from those sessions; where it holds many, every
offer is walked and its sessions checked. On a few hundred offers the first is always taken, so the
bound is lowered here to have the walk taken too: both must give the same offers, totals and facets.
A text near a place is narrowed by its cells (0016), and a page of many hits walks at most a bound
of the newest offers before it reads the text's index (0017): the same pages either way.
In-process, on a catalog database of the test's own."""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import replace
from datetime import date, timedelta

import asyncpg

from runtime.db import tenant_transaction
from services.catalog import handlers, store
from services.catalog.domain import Acting, OfferIn
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider

TENANT = "lueneburg"
TOWNS = {"Lüneburg": (53.25, 10.41), "Arnsberg": (51.40, 8.06), "Dortmund": (51.51, 7.47), "Kassel": (51.32, 9.50)}
START = date(2031, 3, 1)


def _offer(rng: random.Random, provider_id: uuid.UUID, n: int) -> OfferIn:
    fmt = rng.choice(["presence", "presence", "hybrid", "online", "distance"])
    sessions = []
    for _ in range(rng.randint(1, 3)):
        session = {"start": (START + timedelta(days=rng.randint(0, 200))).isoformat()}
        if fmt in ("presence", "hybrid"):
            lat, lon = TOWNS[rng.choice(list(TOWNS))]
            session["location"] = {"zip": "00000", "city": "Ort", "lat": round(lat + rng.uniform(-0.6, 0.6), 4),
                                   "lon": round(lon + rng.uniform(-0.9, 0.9), 4)}
        sessions.append(session)
    return OfferIn.model_validate({
        "provider_id": provider_id, "external_id": f"o-{n}", "title": f"Lehrgang {n}", "description": "Kurs.",
        "format": fmt, "schedule": rng.choice(["full_time", "part_time"]), "qualification": "certificate",
        "hours": 40, "sessions": sessions,
        "status": "published", "visibility": {"scope": "all", "networks": []}})


async def _search(pool: asyncpg.Pool, query: store.OfferQuery, bound: int | None) -> tuple[list[str], dict]:
    ids: list[str] = []
    async with tenant_transaction(pool, TENANT) as conn:
        if bound is not None:
            await conn.execute("SELECT set_config('bildungsraum.search_nearby_bound', $1, true)", str(bound))
        first = await handlers.search_offers(conn, query, with_facets=True)
        page = first
        while True:
            ids += [o["id"] for o in page["items"]]
            if not page["next_cursor"]:
                break
            page = await handlers.search_offers(conn, replace(query, after=handlers.decode_cursor(page["next_cursor"])))
    return ids, {"total": first["total"], "facets": first["facets"]}


async def test_from_the_sessions_and_by_the_walk_the_same_offers(catalog_pool: asyncpg.Pool) -> None:
    rng = random.Random(6)
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        for n in range(300):
            await store.insert_offer(conn, TENANT, _offer(rng, provider_id, n))
    found_some = 0
    for town, (lat, lon) in TOWNS.items():
        for radius, formats, window in [(25, None, None), (50, ["presence"], None), (100, None, (30, 120)),
                                        (25, ["online", "hybrid"], (0, 60))]:
            query = store.OfferQuery(lat=lat, lon=lon, radius_km=radius, formats=formats, page_size=7,
                                     start_from=START + timedelta(days=window[0]) if window else None,
                                     start_to=START + timedelta(days=window[1]) if window else None)
            by_sessions, by_sessions_counts = await _search(catalog_pool, query, None)
            walked, walked_counts = await _search(catalog_pool, query, 0)
            assert by_sessions == walked, (town, radius, formats, window)
            assert by_sessions_counts == walked_counts
            found_some += bool(walked)
    assert found_some >= 12  # the ways were compared on hits, not only on empty pages


async def test_a_text_near_a_place_follows_an_offer_that_moves(catalog_pool: asyncpg.Pool) -> None:
    """A text search near a place is narrowed by the cells where each offer's sessions are (its
    reach, migration 0016), which the writes keep: an offer moved from Arnsberg to Lüneburg is found
    near Lüneburg and no longer near Arnsberg; an online offer, held nowhere, is found near both."""
    word = f"Hubarbeitsbühne{uuid.uuid4().hex[:6]}"

    def offer(fmt: str, town: str | None) -> OfferIn:
        lat, lon = TOWNS[town] if town else (None, None)
        return OfferIn.model_validate({
            "provider_id": provider_id, "external_id": f"{fmt}-{town}", "title": f"{word} sicher bedienen",
            "description": "Kurs.", "format": fmt, "schedule": "full_time", "qualification": "certificate",
            "hours": 16, "status": "published", "visibility": {"scope": "all", "networks": []},
            "sessions": [{"start": START.isoformat(), **({"location": {"zip": "00000", "city": town, "lat": lat,
                                                                        "lon": lon}} if town else {})}]})

    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        moving = await store.insert_offer(conn, TENANT, offer("presence", "Arnsberg"))
        online = await store.insert_offer(conn, TENANT, offer("online", None))

    async def near(town: str) -> set[uuid.UUID]:
        lat, lon = TOWNS[town]
        ids, _ = await _search(catalog_pool, store.OfferQuery(q=word, lat=lat, lon=lon, radius_km=25), None)
        return {uuid.UUID(i) for i in ids}

    assert await near("Arnsberg") == {moving, online}
    assert await near("Lüneburg") == {online}
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        await store.set_acting(conn, Acting(TENANT, "operator-cli", None))
        await store.update_offer(conn, TENANT, moving, offer("presence", "Lüneburg"))
    assert await near("Arnsberg") == {online}
    assert await near("Lüneburg") == {moving, online}


async def test_a_page_walked_or_read_from_the_index_is_the_same(catalog_pool: asyncpg.Pool) -> None:
    """A page of many hits walks the newest offers, at most a bound of them, and reads the tier's
    hits from the text's index where the walk does not fill it (migration 0017: a word in no title
    walked the whole table). Where the hits are few, the count and the facets give the page from their
    own read of them (migration 0021). However far the walk may go, its pages, their order and the
    cursor's next pages are those the count and the facets give."""
    rng = random.Random(17)
    marker = f"sw{uuid.uuid4().hex[:6]}"
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        for n in range(160):
            body = _offer(rng, provider_id, n).model_dump(mode="json")
            in_title = n % 40 == 0  # 4 titles hold "Lehrwerkstatt"; every third description does
            body["title"] = f"{marker} {'Lehrwerkstatt ' if in_title else ''}Lehrgang {n}"
            body["description"] = "Übungen in der Lehrwerkstatt." if n % 3 == 0 else "Kurs."
            await store.insert_offer(conn, TENANT, OfferIn.model_validate(body))

    async def pages(q: str | None, how: str, bound: int | None, size: int, skip: int,
                    where: dict) -> list[list[tuple]]:
        """Up to 12 pages, the cursor's next ones after the first: from the count's own read of the
        hits, from the facets' (migration 0021), or walked (at most ``bound`` offers a tier)."""
        found = []
        async with tenant_transaction(catalog_pool, TENANT) as conn:
            if bound is not None:
                await conn.execute("SELECT set_config('bildungsraum.search_walk_bound', $1, true)", str(bound))
            query = store.OfferQuery(q=q, page_size=size, skip=skip, **where)
            for _ in range(12):
                if how == "walk":
                    page = await store.search_offers(conn, query)
                else:
                    _, page = (await store.count_and_page(conn, query) if how == "count"
                               else await store.facets_and_page(conn, query))
                    assert page is not None  # these few hits are all read by the count
                hits = [(h["id"], h["rank"]) for h in page]
                found.append(hits)
                if len(hits) < size:
                    break
                query = replace(query, skip=0, after=(hits[-1][1], hits[-1][0]))
        return found

    # and near a place, with and without a start window: the walk asks the text before the sessions (0018)
    dortmund = {"lat": TOWNS["Dortmund"][0], "lon": TOWNS["Dortmund"][1]}
    places = ({}, dortmund | {"radius_km": 100},
              dortmund | {"radius_km": 100, "start_from": START, "start_to": START + timedelta(days=120)})
    for where, q in itertools.product(places, (f"{marker} Lehrwerkstatt", "Lehrwerkstatt", f"{marker} Lehrgang")):
        for size, skip in ((7, 0), (5, 3), (20, 0)):
            read = await pages(q, "count", None, size, skip, where)
            assert sum(map(len, read)) > min(size, 7)  # more than one page: the tiers and the cursor are compared
            assert await pages(q, "facets", None, size, skip, where) == read, (q, size, skip, where)
            for bound in (None, 1, 10, 45, 100_000):
                assert await pages(q, "walk", bound, size, skip, where) == read, (q, size, skip, bound, where)
    for where, (size, skip) in itertools.product(places, ((7, 0), (5, 3))):  # no text: newest first
        read = await pages(None, "count", None, size, skip, where)
        assert sum(map(len, read)) > size
        for how in ("facets", "walk"):
            assert await pages(None, how, None, size, skip, where) == read, (how, size, skip, where)
