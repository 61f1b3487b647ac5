"""The demand vectors a matching process keeps between offer changes follow the demands' rows: a ranking
vector another replica wrote is read anew, a raised best score alone reads nothing, a demand no longer
open is not judged. In-process on a matching database of its own."""

from __future__ import annotations

import uuid

import asyncpg
import numpy as np

from runtime.db import tenant_transaction
from services.matching import handlers, relevance
from services.matching.domain import DemandIn
from services.matching.index import from_bytes, to_bytes
from services.matching.kept_demands import DemandVectors
from tests.integration.test_matching_places import HERE, _offer, _publish
from tests.platform import demand_body, future


async def _offers_enough_to_rank(pool: asyncpg.Pool) -> None:
    """Offers enough for a demand's ranking vector (fewer, and none is kept)."""
    for _ in range(relevance.WEIGHTS.feedback_k):
        await _publish(pool, _offer(sessions=[{"start": future(40), "end": future(42), "location": HERE}]))


async def _open_demand(pool: asyncpg.Pool) -> str:
    body = demand_body(employer={"name": "Logistik Heide GmbH", "employees": 35, **HERE}, max_distance_km=10)
    async with tenant_transaction(pool, "lueneburg") as conn:
        return (await handlers.open_demand(conn, "lueneburg", DemandIn.model_validate(body), "test"))["id"]


async def _write(pool: asyncpg.Pool, sql: str, *args) -> None:
    """A change of demands' rows as another replica makes it (in its own transaction)."""
    async with tenant_transaction(pool, "lueneburg") as conn:
        assert await conn.execute(sql, *args) == "UPDATE 1"


class _Reads:
    """A connection that notes the statements run through it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.statements = conn, []

    async def fetch(self, sql: str, *args):
        self.statements.append(sql)
        return await self.conn.fetch(sql, *args)


async def _read(kept: DemandVectors, pool: asyncpg.Pool, demand_ids: list[str]
                ) -> tuple[dict[str, int], list[str], np.ndarray, np.ndarray, list[str]]:
    """Stamps, ids, own and ranking vectors of the open ones, and the statements that read vectors."""
    async with tenant_transaction(pool, "lueneburg") as conn:
        reached, stamps = await kept.reached(conn, demand_ids)
        reads = _Reads(conn)
        ids, own, ranking = await kept.vectors(reads, stamps, [r.id for r in reached if r.ranked])
    return stamps, ids, own, ranking, reads.statements


async def _stored(pool: asyncpg.Pool, demand_id: str) -> tuple[np.ndarray, np.ndarray]:
    async with tenant_transaction(pool, "lueneburg") as conn:
        row = await conn.fetchrow("SELECT vector, ranking_vector FROM demands WHERE id = $1", uuid.UUID(demand_id))
    return from_bytes(row["vector"]), from_bytes(row["ranking_vector"])


async def test_kept_vectors_follow_the_rows_another_replica_writes(matching_pool: asyncpg.Pool) -> None:
    pool = matching_pool
    await _offers_enough_to_rank(pool)
    demand_id = await _open_demand(pool)
    kept = DemandVectors()

    stamps, ids, own, ranking, _ = await _read(kept, pool, [demand_id])
    assert ids == [demand_id]
    stored_own, stored_ranking = await _stored(pool, demand_id)
    assert np.array_equal(own[0], stored_own) and np.array_equal(ranking[0], stored_ranking)

    # another replica ranks the demand anew: its ranking vector changes, and so does its stamp
    moved = np.roll(stored_ranking, 1)
    await _write(pool, "UPDATE demands SET ranking_vector = $2 WHERE id = $1", uuid.UUID(demand_id), to_bytes(moved))
    restamped, ids, own, ranking, reads = await _read(kept, pool, [demand_id])
    assert len(reads) == 1  # read anew
    assert restamped[demand_id] != stamps[demand_id]
    assert np.array_equal(ranking[0], from_bytes(to_bytes(moved))) and np.array_equal(own[0], stored_own)

    # a raised best score leaves the vectors and their stamp as they were
    await _write(pool, "UPDATE demands SET best_score = 0.99 WHERE id = $1", uuid.UUID(demand_id))
    again, _, _, ranking, reads = await _read(kept, pool, [demand_id])
    assert reads == []  # kept
    assert again[demand_id] == restamped[demand_id]
    assert np.array_equal(ranking[0], from_bytes(to_bytes(moved)))

    # a closed demand is reached no more
    await _write(pool, "UPDATE demands SET status = 'closed' WHERE id = $1", uuid.UUID(demand_id))
    gone, ids, _, _, _ = await _read(kept, pool, [demand_id])
    assert gone == {} and ids == []


async def test_more_demands_than_kept_are_still_read_right(matching_pool: asyncpg.Pool) -> None:
    pool = matching_pool
    await _offers_enough_to_rank(pool)
    demand_ids = [await _open_demand(pool) for _ in range(5)]
    kept = DemandVectors(capacity=2)  # every read overflows it: it starts again from nothing
    for first in range(4):
        _, ids, own, ranking, _ = await _read(kept, pool, demand_ids[first:first + 2])
        assert sorted(ids) == sorted(demand_ids[first:first + 2])
        for n, demand_id in enumerate(ids):
            stored_own, stored_ranking = await _stored(pool, demand_id)
            assert np.array_equal(own[n], stored_own) and np.array_equal(ranking[n], stored_ranking)


async def test_a_fresh_process_keeps_every_open_demands_vectors_at_start(matching_pool: asyncpg.Pool) -> None:
    pool = matching_pool
    await _offers_enough_to_rank(pool)
    demand_ids = [await _open_demand(pool) for _ in range(3)]
    await _write(pool, "UPDATE demands SET status = 'closed' WHERE id = $1", uuid.UUID(demand_ids[2]))
    kept = DemandVectors()
    async with pool.acquire() as conn:
        assert await kept.load_open(conn, ["lueneburg"]) == 2
    _, ids, own, ranking, reads = await _read(kept, pool, demand_ids)
    assert reads == []  # the first offer change reads no vectors
    assert sorted(ids) == sorted(demand_ids[:2])
    for n, demand_id in enumerate(ids):
        stored_own, stored_ranking = await _stored(pool, demand_id)
        assert np.array_equal(own[n], stored_own) and np.array_equal(ranking[n], stored_ranking)
