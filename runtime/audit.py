"""The audit log of administrative actions (who, what, when, in which tenant). Each service keeps
its own ``audit_log`` table in its own database (same shape, see identity's and catalog's
migrations) and writes the row in the transaction of the change it records."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from runtime.db import set_tenant


async def record(conn: asyncpg.Connection, tenant: str, actor_sub: str, actor_username: str, action: str,
                 target: str, details: dict[str, Any] | None = None) -> None:
    await set_tenant(conn, tenant)
    await conn.execute(
        "INSERT INTO audit_log (tenant_id, actor_sub, actor_username, action, target, details)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        tenant, actor_sub, actor_username, action, target, json.dumps(details or {}))


async def read(conn: asyncpg.Connection, limit: int, offset: int) -> list[dict[str, Any]]:
    """The acting tenant's entries (row-level security), newest first."""
    rows = await conn.fetch("SELECT * FROM audit_log ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2", limit, offset)
    return [{"at": r["at"].isoformat(), "tenant": r["tenant_id"], "actor": r["actor_username"],
             "actor_sub": r["actor_sub"], "action": r["action"], "target": r["target"],
             "details": json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]}
            for r in rows]
