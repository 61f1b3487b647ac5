"""A demand opened while an offer event is being handled: the pair is matched whichever
transaction commits first. Deterministic interleaving on a matching database of its own."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from contracts import OFFER_PUBLISHED
from runtime.db import set_tenant, tenant_transaction
from runtime.events import Event
from services.matching import handlers
from services.matching.domain import DemandIn
from tests.platform import demand_body, offer_body


async def test_demand_opened_while_an_offer_is_handled_is_matched(matching_pool: asyncpg.Pool) -> None:
    pool = matching_pool
    offer = offer_body(str(uuid.uuid4())) | {"id": str(uuid.uuid4()), "tenant": "lueneburg",
                                             "status": "published", "version": 1}
    event = Event(OFFER_PUBLISHED, "catalog", "lueneburg", offer["id"], offer)

    async def handle_offer() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await set_tenant(conn, event.tenant)
            await handlers.offer_changed(conn, event)

    async with tenant_transaction(pool, "lueneburg") as conn:
        demand = await handlers.open_demand(conn, "lueneburg", DemandIn.model_validate(demand_body()), "test")
        # the demand's candidates are read; the offer event is handled before the demand commits
        offer_task = asyncio.create_task(handle_offer())
        await asyncio.sleep(0.5)
    await asyncio.wait_for(offer_task, 60)  # (the first offer loads the encoder and the towns)

    async with tenant_transaction(pool, "lueneburg") as conn:
        matched = await conn.fetchval("SELECT count(*) FROM matches WHERE demand_id = $1 AND offer_id = $2",
                                      uuid.UUID(demand["id"]), uuid.UUID(offer["id"]))
    assert matched == 1
