"""This service's SQL (asyncpg), run inside a transaction whose acting tenant is already set."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

NOTIFY_CHANNEL = "deliveries_pending"


async def wake_dispatcher(conn: asyncpg.Connection) -> None:
    """Delivered at commit, and only if the transaction commits."""
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


# --- providers read model ---------------------------------------------------------------------

async def upsert_provider(conn: asyncpg.Connection, state: dict[str, Any]) -> bool:
    """Keep the newest state; an older version arriving late changes nothing. True if stored."""
    stored = await conn.fetchval(
        "INSERT INTO providers (id, tenant_id, name, emails, version) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, emails = excluded.emails,"
        "  version = excluded.version, updated_at = now()"
        " WHERE providers.version <= excluded.version"
        " RETURNING true",
        uuid.UUID(state["id"]), state["tenant"], state["name"], list(state["emails"]), state.get("version", 0),
    )
    return bool(stored)


async def get_provider(conn: asyncpg.Connection, provider_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM providers WHERE id = $1", provider_id)


# --- preferences -------------------------------------------------------------------------------

async def ensure_preference(conn: asyncpg.Connection, provider_id: uuid.UUID, tenant_id: str) -> asyncpg.Record:
    await conn.execute(
        "INSERT INTO preferences (provider_id, tenant_id, unsubscribe_token) VALUES ($1, $2, $3)"
        " ON CONFLICT (provider_id) DO NOTHING",
        provider_id, tenant_id, secrets.token_urlsafe(24),
    )
    return await conn.fetchrow("SELECT * FROM preferences WHERE provider_id = $1", provider_id)


async def set_preference(conn: asyncpg.Connection, provider_id: uuid.UUID, tenant_id: str, mode: str) -> asyncpg.Record:
    await ensure_preference(conn, provider_id, tenant_id)
    return await conn.fetchrow(
        "UPDATE preferences SET mode = $2, updated_at = now() WHERE provider_id = $1 RETURNING *", provider_id, mode)


async def unsubscribe(conn: asyncpg.Connection, token: str) -> asyncpg.Record | None:
    """Across tenants by the secret token alone (SECURITY DEFINER function)."""
    return await conn.fetchrow("SELECT * FROM unsubscribe($1)", token)


# --- deliveries --------------------------------------------------------------------------------

async def insert_delivery(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    """A new delivery, or the same one again (replay, redelivery): nothing changes then, unless
    it had been cancelled by a retraction and the match holds again. True if pending now."""
    created = await conn.fetchval(
        "INSERT INTO deliveries (id, tenant_id, kind, idempotency_key, match_id, demand_id, demand_tenant,"
        "  offer_id, provider_id, payload, message_id, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (idempotency_key) DO UPDATE SET status = 'pending', payload = excluded.payload,"
        "  next_attempt_at = now(), enqueued_at = NULL, updated_at = now()"
        " WHERE deliveries.status = 'cancelled'"
        " RETURNING true",
        row["id"], row["tenant_id"], row["kind"], row["idempotency_key"], row["match_id"], row["demand_id"],
        row["demand_tenant"], row["offer_id"], row["provider_id"], row["payload"], row["message_id"],
        row["traceparent"],
    )
    return bool(created)


async def cancel_pending_for_match(conn: asyncpg.Connection, match_id: uuid.UUID) -> int:
    result = await conn.execute(
        "UPDATE deliveries SET status = 'cancelled', updated_at = now() WHERE match_id = $1 AND status = 'pending'",
        match_id,
    )
    return int(result.split()[-1])


async def make_due_for_provider(conn: asyncpg.Connection, provider_id: uuid.UUID) -> int:
    """A provider became known (or changed): its waiting deliveries are due now."""
    result = await conn.execute(
        "UPDATE deliveries SET next_attempt_at = now(), enqueued_at = NULL, updated_at = now()"
        " WHERE provider_id = $1 AND status = 'pending'",
        provider_id,
    )
    return int(result.split()[-1])


async def delivery_tenant(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> str | None:
    return await conn.fetchval("SELECT delivery_tenant($1)", delivery_id)


async def lock_delivery(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    """Locked until the transaction ends: a second worker with the same delivery waits here.
    (NO KEY UPDATE: attempts logged from another connection may still reference the row.)"""
    return await conn.fetchrow(
        "SELECT d.*, now() AS db_now FROM deliveries d WHERE d.id = $1 FOR NO KEY UPDATE", delivery_id)


async def next_attempt(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> int:
    """The next attempt's number; attempts left 'started' by a worker that died are 'interrupted'."""
    await conn.execute(
        "UPDATE delivery_attempts SET outcome = 'interrupted', finished_at = now(),"
        "  error = 'Versand abgebrochen (Worker beendet)' WHERE delivery_id = $1 AND outcome = 'started'",
        delivery_id,
    )
    return await conn.fetchval(
        "SELECT coalesce(max(attempt), 0) + 1 FROM delivery_attempts WHERE delivery_id = $1", delivery_id)


async def start_attempt(conn: asyncpg.Connection, delivery: asyncpg.Record, attempt: int) -> None:
    """Run on a connection of its own and committed at once, before the mail goes out."""
    await conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, tenant_id, attempt, outcome) VALUES ($1, $2, $3, 'started')",
        delivery["id"], delivery["tenant_id"], attempt,
    )


async def record_attempt(
    conn: asyncpg.Connection, delivery: asyncpg.Record, attempt: int, outcome: str,
    error: str | None = None, smtp_code: int | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, tenant_id, attempt, outcome, smtp_code, error, finished_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, now())"
        " ON CONFLICT (delivery_id, attempt) DO UPDATE SET outcome = excluded.outcome,"
        "  smtp_code = excluded.smtp_code, error = excluded.error, finished_at = now()",
        delivery["id"], delivery["tenant_id"], attempt, outcome, smtp_code, error,
    )


async def finish_delivery(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, *, status: str, attempts: int,
    recipient: str | None, error: str | None,
) -> asyncpg.Record:
    return await conn.fetchrow(
        "UPDATE deliveries SET status = $2, attempts = $3, recipient = coalesce($4, recipient), last_error = $5,"
        "  sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END, updated_at = now()"
        " WHERE id = $1 RETURNING *",
        delivery_id, status, attempts, recipient, error,
    )


async def postpone_delivery(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, *, attempts: int, recipient: str | None,
    error: str, delay_seconds: float, requeued_by_task: bool,
) -> asyncpg.Record:
    """After a temporary failure: due again in ``delay_seconds``. When the task re-queues itself
    (a short delay), the dispatcher counts it as enqueued for then; otherwise the dispatcher
    enqueues it when it is due."""
    return await conn.fetchrow(
        "UPDATE deliveries SET attempts = $2, recipient = coalesce($3, recipient), last_error = $4,"
        "  next_attempt_at = now() + $5::interval,"
        "  enqueued_at = CASE WHEN $6 THEN now() + $5::interval ELSE NULL END, updated_at = now()"
        " WHERE id = $1 RETURNING *",
        delivery_id, attempts, recipient, error, timedelta(seconds=delay_seconds), requeued_by_task,
    )


async def claim_due(conn: asyncpg.Connection, grace_seconds: float, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT delivery_id, delivery_tenant FROM claim_due_deliveries($1, $2)",
        timedelta(seconds=grace_seconds), limit,
    )


async def network_name(conn: asyncpg.Connection, tenant_id: str) -> str | None:
    return await conn.fetchval("SELECT name FROM known_tenants WHERE id = $1", tenant_id)


async def list_deliveries(
    conn: asyncpg.Connection, *, limit: int, offset: int, status: str | None = None,
    provider_id: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    """The acting tenant's delivery log (row-level security decides which rows), newest first."""
    rows = await conn.fetch(
        "SELECT d.*, coalesce(("
        "   SELECT jsonb_agg(jsonb_build_object('attempt', a.attempt, 'at', a.at, 'finished_at', a.finished_at,"
        "          'outcome', a.outcome, 'smtp_code', a.smtp_code, 'error', a.error) ORDER BY a.attempt)"
        "   FROM delivery_attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempt_log"
        " FROM deliveries d"
        " WHERE ($3::text IS NULL OR d.status = $3) AND ($4::uuid IS NULL OR d.provider_id = $4)"
        " ORDER BY d.created_at DESC, d.id LIMIT $1 OFFSET $2",
        limit, offset, status, provider_id,
    )
    return [delivery_view(r) for r in rows]


def delivery_view(r: asyncpg.Record) -> dict[str, Any]:
    payload = r["payload"] or {}
    return {
        "id": str(r["id"]),
        "tenant": r["tenant_id"],
        "kind": r["kind"],
        "match_id": str(r["match_id"]),
        "demand_id": str(r["demand_id"]),
        "offer_id": str(r["offer_id"]),
        "provider_id": str(r["provider_id"]),
        "demand_title": payload.get("demand", {}).get("title"),
        "offer_title": payload.get("offer", {}).get("title"),
        "recipient": r["recipient"],
        "status": r["status"],
        "attempts": r["attempts"],
        "last_error": r["last_error"],
        "message_id": r["message_id"],
        "created_at": r["created_at"].isoformat(),
        "sent_at": r["sent_at"].isoformat() if r["sent_at"] else None,
        "next_attempt_at": r["next_attempt_at"].isoformat() if r["status"] == "pending" else None,
        "attempt_log": r["attempt_log"] if "attempt_log" in r.keys() else [],
    }
