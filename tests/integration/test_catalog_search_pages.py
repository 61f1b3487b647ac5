"""Numbered pages reach every offer up to the furthest start the search allows and refuse to go
deeper (they would repeat the last page allowed); a page never shows an offer moved to draft or
withdrawn while it was read. In-process, on a catalog database of the test's own."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from runtime.db import tenant_transaction
from runtime.http import Problem
from services.catalog import api, handlers, store
from services.catalog.domain import Acting, OfferIn
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider

TENANT = "lueneburg"


def _offer(provider_id: uuid.UUID, n: int) -> OfferIn:
    return OfferIn.model_validate({
        "provider_id": provider_id, "external_id": f"o-{n}", "title": f"Schweißer Lehrgang {n}",
        "description": "Kurs.", "format": "presence", "schedule": "part_time", "qualification": "certificate",
        "hours": 40, "sessions": [{"start": "2031-03-01",
                                   "location": {"zip": "21335", "city": "Lüneburg", "lat": 53.25, "lon": 10.41}}],
        "status": "published", "visibility": {"scope": "home", "networks": []}})


async def _provider_with(pool: asyncpg.Pool, n: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    ids = [uuid.uuid4() for _ in range(n)]
    async with tenant_transaction(pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
        await store.insert_offers(conn, TENANT, [(i, _offer(provider_id, k), None) for k, i in enumerate(ids)])
    return provider_id, ids


async def test_numbered_pages_reach_every_offer_up_to_their_furthest_start_and_no_further(
        catalog_pool: asyncpg.Pool) -> None:
    provider_id, ids = await _provider_with(catalog_pool, store.MAX_SKIP + 50)
    for q in (None, "Schweißer"):  # the filters' walk and the text's tiers
        seen = []
        async with tenant_transaction(catalog_pool, TENANT) as conn:
            for page in range(1, store.MAX_SKIP // 100 + 2):  # the last one starts at MAX_SKIP exactly
                query = await api.offer_query(q=q, provider_id=provider_id, page=page, page_size=100)
                seen += [item["id"] for item in (await handlers.search_offers(conn, query))["items"]]
        assert len(seen) == len(set(seen)) == len(ids), q  # each offer once, none left out
        assert set(seen) == {str(i) for i in ids}
    with pytest.raises(Problem) as refused:  # before, it gave the offers at 1,000 again as the next page
        await api.offer_query(provider_id=provider_id, page=store.MAX_SKIP // 100 + 2, page_size=100)
    assert refused.value.status == 422 and refused.value.extra["errors"][0]["field"] == "query.page"
    await api.offer_query(page=50, page_size=20)  # the portal's deepest page stays allowed


@pytest.mark.parametrize("public", [False, True])
async def test_an_offer_moved_to_draft_while_its_page_is_read_is_not_shown(
        catalog_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, public: bool) -> None:
    _, ids = await _provider_with(catalog_pool, 3)
    drafted = ids[1]
    read_offers = store.get_offers

    async def draft_first_then_read(conn: asyncpg.Connection, offer_ids: list[uuid.UUID]) -> list:
        # The window: the search has found the offer, its rows are not read yet. Another transaction
        # (the provider) moves it to draft and commits.
        assert drafted in offer_ids
        async with tenant_transaction(catalog_pool, TENANT) as other:
            await store.set_acting(other, Acting(TENANT, "operator-cli", None))
            await other.execute("UPDATE offers SET status = 'draft' WHERE id = $1", drafted)
        return await read_offers(conn, offer_ids)

    monkeypatch.setattr(store, "get_offers", draft_first_then_read)
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        answer = await handlers.search_offers(conn, store.OfferQuery(q="Schweißer"), public=public)
    assert {item["id"] for item in answer["items"]} == {str(ids[0]), str(ids[2])}
