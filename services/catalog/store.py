"""The catalog's SQL. Every function runs inside the caller's tenant transaction, so row-level
security already limits what it sees; the explicit filters say the same thing twice, on purpose."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from services.catalog.domain import OfferIn, ProviderIn

# ---- providers -------------------------------------------------------------------------------


def provider_state(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "tenant": row["tenant_id"], "external_id": row["external_id"],
        "name": row["name"], "emails": list(row["emails"]), "address": row["address"], "azav": row["azav"],
        "updated_at": row["updated_at"].isoformat(), "version": row["version"],
    }


async def insert_provider(conn: asyncpg.Connection, tenant: str, body: ProviderIn) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO providers (id, tenant_id, external_id, name, emails, address, azav)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        uuid.uuid4(), tenant, body.external_id, body.name, [str(e) for e in body.emails], body.address, body.azav,
    )


async def update_provider(conn: asyncpg.Connection, tenant: str, provider_id: uuid.UUID,
                          body: ProviderIn) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE providers SET external_id = $3, name = $4, emails = $5, address = $6, azav = $7,"
        " version = version + 1, updated_at = now() WHERE id = $1 AND tenant_id = $2 RETURNING *",
        provider_id, tenant, body.external_id, body.name, [str(e) for e in body.emails], body.address, body.azav,
    )


async def get_provider(conn: asyncpg.Connection, provider_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM providers WHERE id = $1", provider_id)


# ---- offers ----------------------------------------------------------------------------------

_OFFER_COLUMNS = (
    "o.*, coalesce((SELECT jsonb_agg(jsonb_build_object("
    " 'start', s.start_date, 'end', s.end_date, 'location', CASE WHEN s.lat IS NULL THEN NULL ELSE"
    " jsonb_build_object('zip', s.zip, 'city', s.city, 'lat', s.lat, 'lon', s.lon) END) ORDER BY s.position)"
    " FROM offer_sessions s WHERE s.offer_id = o.id), '[]'::jsonb) AS sessions"
)


def offer_state(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "tenant": row["tenant_id"], "provider_id": str(row["provider_id"]),
        "external_id": row["external_id"], "title": row["title"], "description": row["description"],
        "skills": list(row["skills"]), "qualification": row["qualification"], "format": row["format"],
        "schedule": row["schedule"], "hours": _number(row["hours"]), "price_eur": _number(row["price_eur"]),
        "funding": row["funding"], "sessions": row["sessions"],
        "visibility": {"scope": row["visibility_scope"], "networks": list(row["visibility_networks"])},
        "language": row["language"], "status": row["status"], "version": row["version"],
        "updated_at": row["updated_at"].isoformat(),
    }


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    return int(value) if value == int(value) else float(value)


async def get_offer(conn: asyncpg.Connection, offer_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_OFFER_COLUMNS} FROM offers o WHERE o.id = $1", offer_id)


async def insert_offer(conn: asyncpg.Connection, tenant: str, body: OfferIn) -> uuid.UUID:
    offer_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO offers (id, tenant_id, provider_id, external_id, title, description, skills, qualification,"
        " format, schedule, hours, price_eur, funding, visibility_scope, visibility_networks, language, status)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        offer_id, tenant, body.provider_id, *_offer_values(body),
    )
    await _insert_sessions(conn, tenant, offer_id, body)
    return offer_id


async def update_offer(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, body: OfferIn) -> None:
    await conn.execute(
        "UPDATE offers SET provider_id = $3, external_id = $4, title = $5, description = $6, skills = $7,"
        " qualification = $8, format = $9, schedule = $10, hours = $11, price_eur = $12, funding = $13,"
        " visibility_scope = $14, visibility_networks = $15, language = $16, status = $17,"
        " version = version + 1, updated_at = now() WHERE id = $1 AND tenant_id = $2",
        offer_id, tenant, body.provider_id, *_offer_values(body),
    )
    await conn.execute("DELETE FROM offer_sessions WHERE offer_id = $1", offer_id)
    await _insert_sessions(conn, tenant, offer_id, body)


async def set_offer_status(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        "UPDATE offers SET status = $3, version = version + 1, updated_at = now()"
        " WHERE id = $1 AND tenant_id = $2", offer_id, tenant, status,
    )


def _offer_values(body: OfferIn) -> tuple:
    return (
        body.external_id, body.title, body.description, body.skills, body.qualification.value,
        body.format.value, body.schedule.value, body.hours, body.price_eur, body.funding.model_dump(),
        body.visibility.scope, body.visibility.networks, body.language, body.status,
    )


async def _insert_sessions(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, body: OfferIn) -> None:
    await conn.executemany(
        "INSERT INTO offer_sessions (offer_id, tenant_id, position, start_date, end_date, zip, city, lat, lon)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (offer_id, tenant, i, s.start, s.end, *(
                (s.location.zip, s.location.city, s.location.lat, s.location.lon) if s.location else (None,) * 4))
            for i, s in enumerate(body.sessions)
        ],
    )


# ---- search ----------------------------------------------------------------------------------


@dataclass
class OfferQuery:
    q: str | None = None
    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None
    formats: list[str] | None = None
    schedules: list[str] | None = None
    qualifications: list[str] | None = None
    start_from: date | None = None
    start_to: date | None = None
    max_price_eur: float | None = None
    funding: list[str] | None = None
    provider_id: uuid.UUID | None = None
    page: int = 1
    page_size: int = 20


async def search_offers(conn: asyncpg.Connection, query: OfferQuery) -> tuple[list[asyncpg.Record], int]:
    """Published offers the acting tenant may see (row-level security), filtered, ranked and paged."""
    where = ["o.status = 'published'"]
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    rank = "0"
    if query.q:
        tsq = f"websearch_to_tsquery('german', {param(query.q)})"
        where.append(f"o.search @@ {tsq}")
        rank = f"ts_rank_cd(o.search, {tsq})"
    session_conditions = []
    if query.start_from:
        session_conditions.append(f"s.start_date >= {param(query.start_from)}")
    if query.start_to:
        session_conditions.append(f"s.start_date <= {param(query.start_to)}")
    if query.lat is not None and query.lon is not None and query.radius_km:
        here = f"ll_to_earth({param(query.lat)}, {param(query.lon)})"
        radius_m = param(query.radius_km * 1000)
        session_conditions.append(
            f"(o.format IN ('online', 'distance') OR (s.lat IS NOT NULL AND earth_box({here}, {radius_m})"
            f" @> ll_to_earth(s.lat, s.lon) AND earth_distance({here}, ll_to_earth(s.lat, s.lon)) <= {radius_m}))"
        )
    if session_conditions:
        where.append(
            "EXISTS (SELECT 1 FROM offer_sessions s WHERE s.offer_id = o.id AND "
            + " AND ".join(session_conditions) + ")"
        )
    for column, values in (("format", query.formats), ("schedule", query.schedules),
                           ("qualification", query.qualifications)):
        if values:
            where.append(f"o.{column} = ANY({param(values)}::text[])")
    if query.max_price_eur is not None:
        where.append(f"coalesce(o.price_eur, 0) <= {param(query.max_price_eur)}")
    for flag in query.funding or []:
        where.append(f"(o.funding ->> {param(flag)})::boolean")
    if query.provider_id:
        where.append(f"o.provider_id = {param(query.provider_id)}")
    limit, offset = param(query.page_size), param((query.page - 1) * query.page_size)
    rows = await conn.fetch(
        f"SELECT {_OFFER_COLUMNS}, {rank} AS rank, count(*) OVER () AS total FROM offers o"
        f" WHERE {' AND '.join(where)} ORDER BY rank DESC, o.updated_at DESC, o.id LIMIT {limit} OFFSET {offset}",
        *params,
    )
    return rows, (rows[0]["total"] if rows else 0)
