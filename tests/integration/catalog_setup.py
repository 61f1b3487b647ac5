"""Setting up a catalog database in-process, as the operators' import does; two writes made to meet."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from services.catalog import store
from services.catalog.domain import Acting, ProviderIn


async def act_as_the_import_for_a_new_provider(conn: asyncpg.Connection, tenant: str,
                                               name: str = "Träger") -> uuid.UUID:
    """Act as the operators' command-line import does and add a provider of the network's own."""
    await store.set_acting(conn, Acting(tenant, "operator-cli", None))
    return await store.insert_provider(conn, tenant, ProviderIn(name=name, emails=["kurse@traeger.example"]))


async def _waits_for_a_lock(pool: asyncpg.Pool, task: asyncio.Task) -> None:
    """Until a backend waits for a lock (the second write, behind the first), or fail."""
    for _ in range(100):
        assert not task.done(), "the second write did not wait for the first"
        if await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the second write never waited for the first")


async def first_holds_second_waits(pool: asyncpg.Pool, acting: Acting,
                                   first: Callable[[asyncpg.Connection], Awaitable[object]],
                                   second: Callable[[], Awaitable[object]]) -> object:
    """``first`` in a transaction of ``acting``'s left open until ``second`` (in a transaction of its
    own) waits for a lock; then ``first`` commits, and ``second``'s outcome is answered (its exception
    raised). The test fails where ``second`` did not wait."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    committed = False
    try:
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", acting.tenant)
        await store.set_acting(conn, acting)
        await first(conn)
        waiting = asyncio.create_task(second())
        await _waits_for_a_lock(pool, waiting)
        await tx.commit()
        committed = True
        return await waiting
    finally:
        if not committed:
            await tx.rollback()
        await pool.release(conn)
