"""A search's total is exact up to a bound and "more than" the bound beyond it. A text with no
filter beside it is counted in an eighth of the offers first (migration 0019), a text near a
place in a quarter (0023): where more than the bound of that sample match, so do more than the
bound of all. Whichever way it is counted, the total and the facets' sum are those of a plain
count, and an offer the network may not see never counts. In-process, on a catalog database of the
test's own."""

from __future__ import annotations

import uuid

import asyncpg

from runtime.db import tenant_transaction
from services.catalog import handlers, store
from services.catalog.domain import OfferIn
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider

TENANT, OTHER = "lueneburg", "westfaelisches-ruhrgebiet"


def _offer(provider_id: uuid.UUID, n: int, word: str, status: str, scope: str) -> OfferIn:
    return OfferIn.model_validate({
        "provider_id": provider_id, "external_id": f"o-{n}", "title": f"Lehrgang {n}",
        "description": f"{word} für Einsteiger.", "format": ["presence", "online", "hybrid"][n % 3],
        "schedule": "part_time", "qualification": "certificate", "hours": 40,
        "sessions": [{"start": "2031-03-01",
                      "location": {"zip": "21335", "city": "Lüneburg", "lat": 53.25, "lon": 10.41}}],
        "status": status, "visibility": {"scope": scope, "networks": []}})


async def _add(pool: asyncpg.Pool, tenant: str, offers: list[tuple[str, str, str]]) -> None:
    async with tenant_transaction(pool, tenant) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, tenant)
        for n, (word, status, scope) in enumerate(offers):
            await store.insert_offer(conn, tenant, _offer(provider_id, n, word, status, scope))


async def _scans(conn: asyncpg.Connection, index: str) -> int:
    """How often this transaction has read the index (the definer functions' reads included)."""
    return await conn.fetchval("SELECT pg_stat_get_xact_numscans($1::regclass)", index)


OURS = [("Schlosser", "published", "home")] * 120 + [("Schlosser", "draft", "home")] * 40 \
    + [("Dreher", "published", "home")] * 6 + [("Dreher", "draft", "home")] * 100
THEIRS = [("Schlosser", "published", "all")] * 40 + [("Schlosser", "published", "home")] * 200 \
    + [("Dreher", "published", "home")] * 200


def _visible(word: str, formats: tuple[str, ...]) -> int:
    """What a plain filter counts: published, the network's own or shared with all, the word, the format."""
    return sum(w == word and status == "published" and (tenant == TENANT or scope == "all")
               and ["presence", "online", "hybrid"][n % 3] in formats
               for tenant, offers in ((TENANT, OURS), (OTHER, THEIRS)) for n, (w, status, scope) in enumerate(offers))


async def test_the_bounded_total_is_exact_however_it_is_counted(catalog_pool: asyncpg.Pool) -> None:
    # "Schlosser": 160 offers the network sees among 400; "Dreher": 6 among 306, so that an eighth of
    # the ones it may not see could overtake a small bound if they were counted
    await _add(catalog_pool, TENANT, OURS)
    await _add(catalog_pool, OTHER, THEIRS)
    everything = ("presence", "online", "hybrid")
    assert (_visible("Schlosser", everything), _visible("Dreher", everything)) == (160, 6)

    sampled = 0
    for word in ("Schlosser", "Dreher"):
        visible = _visible(word, everything)
        for bound in (1, 2, 3, 5, 6, 7, 9, 12, 15, 20, 30, 60, 159, 160, 161, 1000):
            async with tenant_transaction(catalog_pool, TENANT) as conn:
                query = store.OfferQuery(q=word)
                total, page = await store.count_and_page(conn, query, bound)  # a page where few (0021)
                sampled += await _scans(conn, "offers_search_sample")
                assert (total, page is None) == (min(visible, bound + 1), visible > bound), (word, bound)
                facets, page = await store.facets_and_page(conn, query, bound)
                assert sum(facets["format"].values()) == min(visible, bound), (word, bound)
                assert (page is None) == (visible >= bound), (word, bound)  # a page where all were counted
                # with a filter beside the text it is counted whole at once: the same answer
                online = await store.count_offers(conn, store.OfferQuery(q=word, formats=["online"]), bound)
                assert online == min(_visible(word, ("online",)), bound + 1), (word, bound)
        async with tenant_transaction(catalog_pool, TENANT) as conn:
            page = await handlers.search_offers(conn, store.OfferQuery(q=word, page_size=10), with_facets=True)
            assert (page["total"], page["total_exceeds"], page["facets_complete"]) == (visible, False, True)
    # the eighth's own index answered some of these counts (else this test compared one way with itself)
    assert sampled > 0

    # A text near a place and nothing else is counted in a quarter first (0023), with the box's cells
    # up to 100 of them. Every offer of OURS and THEIRS is held in Lüneburg: near it all of them count,
    # near Dortmund (about 250 km away) only the online ones, which are near every place.
    quartered = 0
    places = [((53.25, 10.41), radius, everything) for radius in (25, 100)] \
        + [((51.51, 7.47), radius, ("online",)) for radius in (25, 100, 200)]
    for word in ("Schlosser", "Dreher"):
        for (lat, lon), radius, formats in places:
            visible = _visible(word, formats)
            for bound in (1, 5, 6, 7, 12, 20, 30, 52, 53, 54, 60, 159, 160, 161, 1000):
                async with tenant_transaction(catalog_pool, TENANT) as conn:
                    query = store.OfferQuery(q=word, lat=lat, lon=lon, radius_km=radius)
                    total, page = await store.count_and_page(conn, query, bound)
                    quartered += await _scans(conn, "offers_search_quarter")
                    assert (total, page is None) == (min(visible, bound + 1), visible > bound), (word, radius, bound)
                    facets, page = await store.facets_and_page(conn, query, bound)
                    assert sum(facets["format"].values()) == min(visible, bound), (word, radius, bound)
    assert quartered > 0


async def test_facets_beyond_the_bound_say_they_are_not_every_hits(catalog_pool: asyncpg.Pool,
                                                                   monkeypatch) -> None:
    """Past the bound the total is "more than" it, and the facets count the hits counted, not all:
    the answer says so (before, a page showed them as if they were every hit's)."""
    monkeypatch.setattr(store, "TOTAL_BOUND", 100)
    await _add(catalog_pool, TENANT, OURS)
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        many = await handlers.search_offers(conn, store.OfferQuery(q="Schlosser"), with_facets=True)
        few = await handlers.search_offers(conn, store.OfferQuery(q="Dreher"), with_facets=True)
    assert (many["total"], many["total_exceeds"], many["facets_complete"]) == (100, True, False)
    assert sum(many["facets"]["format"].values()) <= 101
    assert (few["total"], few["total_exceeds"], few["facets_complete"]) == (6, False, True)
