"""Identity use cases."""

from __future__ import annotations

import asyncpg

from contracts import TENANT_CREATED, TENANTS_TOPIC
from runtime.errors import Conflict
from runtime.events import Event
from runtime.outbox import add_to_outbox
from services.identity.domain import SEED_TENANTS, CreateTenant

SOURCE = "identity"


def _tenant_state(row: asyncpg.Record) -> dict:
    return {"id": row["id"], "name": row["name"], "status": row["status"],
            "created_at": row["created_at"].isoformat()}


async def create_tenant(conn: asyncpg.Connection, command: CreateTenant) -> dict:
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING *",
        command.id, command.name,
    )
    if row is None:
        raise Conflict(f"tenant {command.id!r} exists")
    state = _tenant_state(row)
    await add_to_outbox(conn, TENANTS_TOPIC, Event(TENANT_CREATED, SOURCE, command.id, command.id, state))
    return state


async def seed_tenants(pool: asyncpg.Pool) -> None:
    for tenant_id, name in SEED_TENANTS.items():
        async with pool.acquire() as conn, conn.transaction():
            try:
                await create_tenant(conn, CreateTenant(id=tenant_id, name=name))
            except Conflict:
                pass


async def list_tenants(conn: asyncpg.Connection, only: str | None = None) -> list[dict]:
    rows = await conn.fetch(
        "SELECT * FROM tenants WHERE $1::text IS NULL OR id = $1 ORDER BY id", only)
    return [_tenant_state(r) for r in rows]

