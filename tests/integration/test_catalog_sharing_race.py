"""A network's default shares change while one of its offers is written (through the API or an
import): the offer must end up seen by the networks of the shares that hold once both have
committed, and its event must say so. Before, the offer kept the audience of the old shares until
it was next written, and matching with it. The change holds the network's row; the write waits for
it (store.hold_sharing), so each test checks that the write really waited. In-process, on a catalog
database of the test's own."""

from __future__ import annotations

import io
import uuid

import asyncpg
import orjson

from runtime.db import tenant_transaction
from services.catalog import handlers, importing, openqcat, store
from services.catalog.domain import Acting, SharingIn
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider, first_holds_second_waits
from tests.integration.test_catalog_import_order import _file, _offer
from tests.integration.test_catalog_search_pages import _offer as _api_offer

TENANT, PARTNER = "lueneburg", "hellweg-hochsauerland"
ADMIN = Acting(TENANT, "network-admin", None)


async def _written_during_a_sharing_change(pool: asyncpg.Pool, write) -> None:
    await first_holds_second_waits(pool, ADMIN, lambda change: handlers.set_sharing(
        change, ADMIN, SharingIn(networks=[PARTNER])), write)


async def _seen_by(pool: asyncpg.Pool, offer_id: uuid.UUID) -> tuple[list[str], dict]:
    async with tenant_transaction(pool, TENANT) as conn:
        visible_to = await conn.fetchval("SELECT visible_to FROM offers WHERE id = $1", offer_id)
        event = await conn.fetchval("SELECT payload FROM outbox WHERE aggregate_key = $1 ORDER BY id DESC LIMIT 1",
                                    str(offer_id))
    return sorted(visible_to), orjson.loads(event)["visibility"]


async def test_an_offer_published_while_the_shares_change_is_seen_by_the_new_partner(catalog_pool) -> None:
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)
    published: list[uuid.UUID] = []

    async def publish() -> None:
        async with tenant_transaction(catalog_pool, TENANT) as conn:
            await store.set_acting(conn, ADMIN)
            published.append(uuid.UUID((await handlers.publish_offer(conn, ADMIN, _api_offer(provider_id, 1)))["id"]))

    await _written_during_a_sharing_change(catalog_pool, publish)
    assert await _seen_by(catalog_pool, published[0]) == (
        [PARTNER, TENANT], {"scope": "networks", "networks": [PARTNER]})


async def test_an_import_while_the_shares_change_announces_what_it_wrote(catalog_pool) -> None:
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANT)

    async def imported() -> None:
        async with tenant_transaction(catalog_pool, TENANT) as conn:
            await store.set_acting(conn, ADMIN)
            await importing.import_catalogue(conn, ADMIN, provider_id, openqcat.reader(io.BytesIO(
                _file([_offer("A", "Schweißen MAG", "2031-02-01")]))))

    await _written_during_a_sharing_change(catalog_pool, imported)
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        offer_id = await conn.fetchval("SELECT id FROM offers WHERE external_id = 'A'")
    assert await _seen_by(catalog_pool, offer_id) == (
        [PARTNER, TENANT], {"scope": "networks", "networks": [PARTNER]})
