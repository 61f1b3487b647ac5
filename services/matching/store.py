"""Matching's SQL, run inside the caller's tenant transaction (row-level security applies)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


async def upsert_offer(conn: asyncpg.Connection, offer: dict[str, Any]) -> bool:
    """Store the offer's state unless a newer version is already here; True when stored."""
    starts = [s["start"] for s in offer["sessions"]] or [None]
    row = await conn.fetchval(
        "INSERT INTO offers (id, tenant_id, provider_id, external_id, title, format, price_eur, qcg,"
        " visibility_scope, visibility_networks, status, version, state, first_start, last_start)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::text::date, $15::text::date)"
        " ON CONFLICT (id) DO UPDATE SET provider_id = excluded.provider_id, external_id = excluded.external_id,"
        " title = excluded.title, format = excluded.format, price_eur = excluded.price_eur, qcg = excluded.qcg,"
        " visibility_scope = excluded.visibility_scope, visibility_networks = excluded.visibility_networks,"
        " status = excluded.status, version = excluded.version, state = excluded.state,"
        " first_start = excluded.first_start, last_start = excluded.last_start, updated_at = now()"
        " WHERE offers.version < excluded.version RETURNING true",
        uuid.UUID(offer["id"]), offer["tenant"], uuid.UUID(offer["provider_id"]), offer.get("external_id"),
        offer["title"], offer["format"], offer.get("price_eur"), offer["funding"]["qcg"],
        offer["visibility"]["scope"], offer["visibility"].get("networks", []), offer["status"], offer["version"],
        offer, min(filter(None, starts), default=None), max(filter(None, starts), default=None),
    )
    return bool(row)


async def candidate_offers(conn: asyncpg.Connection, tenant: str, demand: dict[str, Any]) -> list[dict]:
    """Published offers the tenant may see that can pass the cheap constraints; the rest is domain.check."""
    rows = await conn.fetch(
        "SELECT state FROM offers WHERE status = 'published'"
        " AND (tenant_id = $1 OR visibility_scope = 'all' OR $1 = ANY (visibility_networks))"
        " AND format = ANY ($2::text[]) AND first_start <= $4::text::date AND last_start >= $3::text::date"
        " AND ($5::numeric IS NULL OR coalesce(price_eur, 0) <= $5) AND (NOT $6 OR qcg)",
        tenant, demand["formats"], demand["start_from"], demand["start_to"], demand.get("max_price_eur"),
        demand["funding_required"],
    )
    return [r["state"] for r in rows]


async def insert_demand(conn: asyncpg.Connection, demand: dict[str, Any], created_by: str) -> None:
    await conn.execute(
        "INSERT INTO demands (id, tenant_id, created_by, status, formats, start_from, start_to, state)"
        " VALUES ($1, $2, $3, $4, $5, $6::text::date, $7::text::date, $8)",
        uuid.UUID(demand["id"]), demand["tenant"], created_by, demand["status"], demand["formats"],
        demand["start_from"], demand["start_to"], demand,
    )


async def get_demand(conn: asyncpg.Connection, demand_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM demands WHERE id = $1", demand_id)


async def close_demand(conn: asyncpg.Connection, demand_id: uuid.UUID, state: dict[str, Any]) -> None:
    await conn.execute("UPDATE demands SET status = 'closed', state = $2, updated_at = now() WHERE id = $1",
                       demand_id, state)


async def open_demands(conn: asyncpg.Connection, tenant: str) -> list[dict]:
    rows = await conn.fetch("SELECT state FROM demands WHERE tenant_id = $1 AND status = 'open'", tenant)
    return [r["state"] for r in rows]


async def matches_of_offer(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch("SELECT * FROM matches WHERE tenant_id = $1 AND offer_id = $2", tenant, offer_id)
    return {str(r["demand_id"]): r for r in rows}


async def insert_match(conn: asyncpg.Connection, tenant: str, demand_id: str, offer_id: str,
                       score: float, reasons: dict) -> asyncpg.Record | None:
    """A new match, or None when the pair was matched before (never announced twice)."""
    return await conn.fetchrow(
        "INSERT INTO matches (id, tenant_id, demand_id, offer_id, score, reasons, status)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'active') ON CONFLICT (demand_id, offer_id) DO NOTHING RETURNING *",
        uuid.uuid4(), tenant, uuid.UUID(demand_id), uuid.UUID(offer_id), score, reasons,
    )


async def update_match(conn: asyncpg.Connection, match_id: uuid.UUID, status: str,
                       score: float | None = None, reasons: dict | None = None) -> None:
    await conn.execute(
        "UPDATE matches SET status = $2, score = coalesce($3, score), reasons = coalesce($4, reasons),"
        " updated_at = now() WHERE id = $1", match_id, status, score, reasons,
    )


async def active_matches(conn: asyncpg.Connection, demand_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT m.*, o.external_id, o.title, o.provider_id FROM matches m JOIN offers o ON o.id = m.offer_id"
        " WHERE m.demand_id = $1 AND m.status = 'active' ORDER BY m.score DESC, m.created_at", demand_id,
    )
