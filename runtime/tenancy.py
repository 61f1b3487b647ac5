"""The tenants read model every consumer of ``identity.tenants.v1`` keeps (table ``known_tenants``)."""

from __future__ import annotations

import asyncpg

from contracts import TENANT_CREATED, TENANT_UPDATED
from runtime.events import Event


async def upsert_known_tenant(conn: asyncpg.Connection, event: Event) -> None:
    t = event.data
    await conn.execute(
        "INSERT INTO known_tenants (id, name, status) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, status = excluded.status, updated_at = now()",
        t["id"], t["name"], t["status"],
    )


TENANT_HANDLERS = {TENANT_CREATED: upsert_known_tenant, TENANT_UPDATED: upsert_known_tenant}
