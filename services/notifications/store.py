"""This service's SQL (asyncpg), run inside a transaction whose acting tenant is already set."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg

NOTIFY_CHANNEL = "deliveries_pending"
# A delivery that can still be cancelled (kept the same in migration 0002's cancel_for_demand).
NOT_GONE_OUT = ("(d.status = 'pending' OR (d.status = 'digested' AND EXISTS ("
                "SELECT 1 FROM digest_items i WHERE i.notice_id = d.id AND i.digest_id IS NULL)))")


async def wake_dispatcher(conn: asyncpg.Connection) -> None:
    """Delivered at commit, and only if the transaction commits."""
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


# --- providers read model ---------------------------------------------------------------------

async def upsert_provider(conn: asyncpg.Connection, state: dict[str, Any]) -> bool:
    """Keep the newest state; an older version arriving late changes nothing. True if stored."""
    stored = await conn.fetchval(
        "INSERT INTO providers (id, tenant_id, name, emails, members, version) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, emails = excluded.emails,"
        "  members = excluded.members, version = excluded.version, updated_at = now()"
        " WHERE providers.version <= excluded.version"
        " RETURNING true",
        uuid.UUID(state["id"]), state["tenant"], state["name"], list(state["emails"]),
        [m for m in state.get("members") or [] if isinstance(m, str)], state.get("version", 0),
    )
    return bool(stored)


async def get_provider(conn: asyncpg.Connection, provider_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM providers WHERE id = $1", provider_id)


async def providers_with_member(conn: asyncpg.Connection, subject: str) -> list[uuid.UUID]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM providers WHERE $1 = ANY (members)", subject)]


async def act_for_providers(conn: asyncpg.Connection, provider_ids: set[uuid.UUID]) -> None:
    """Row-level security from here on shows this transaction only these providers' rows."""
    value = "providers:" + ",".join(sorted(str(p) for p in provider_ids))
    await conn.execute("SELECT set_config('app.acting_providers', $1, true)", value)


# --- tenant branding -----------------------------------------------------------------------------

async def upsert_branding(conn: asyncpg.Connection, tenant: dict[str, Any]) -> None:
    def url(key: str) -> str | None:
        value = tenant.get(key)
        return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None

    await conn.execute(
        "INSERT INTO tenant_branding (tenant_id, name, logo_url, imprint_url, privacy_url) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name, logo_url = excluded.logo_url,"
        "  imprint_url = excluded.imprint_url, privacy_url = excluded.privacy_url, updated_at = now()",
        tenant["id"], tenant["name"], url("logo_url"), url("imprint_url"), url("privacy_url"),
    )


async def branding(conn: asyncpg.Connection, tenant_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM tenant_branding WHERE tenant_id = $1", tenant_id)


# --- preferences -------------------------------------------------------------------------------

async def get_preference(conn: asyncpg.Connection, provider_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM preferences WHERE provider_id = $1", provider_id)


async def set_preference(conn: asyncpg.Connection, provider_id: uuid.UUID, tenant_id: str, pref: Any) -> None:
    """The provider's default and its per-address choices, replaced as a whole."""
    await conn.execute(
        "INSERT INTO preferences (provider_id, tenant_id, mode, digest_hour, digest_weekday, offer_ids, topics)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (provider_id) DO UPDATE SET mode = excluded.mode, digest_hour = excluded.digest_hour,"
        "  digest_weekday = excluded.digest_weekday, offer_ids = excluded.offer_ids, topics = excluded.topics,"
        "  updated_at = now()",
        provider_id, tenant_id, pref.mode, pref.digest_hour, pref.digest_weekday, list(pref.offer_ids),
        list(pref.topics),
    )
    await conn.execute("DELETE FROM address_preferences WHERE owner_kind = 'provider' AND owner_id = $1",
                       str(provider_id))
    for a in pref.addresses:
        await set_address_choice(conn, tenant_id, "provider", str(provider_id), a.address.lower(), a.mode,
                                 a.digest_hour, a.digest_weekday)


async def set_address_choice(conn: asyncpg.Connection, tenant_id: str, owner_kind: str, owner_id: str, address: str,
                             mode: str, digest_hour: int = 7, digest_weekday: int = 1,
                             min_score: float | None = None) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO address_preferences (tenant_id, owner_kind, owner_id, address, mode, digest_hour,"
        "  digest_weekday, min_score) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (owner_kind, owner_id, address) DO UPDATE SET mode = excluded.mode,"
        "  digest_hour = excluded.digest_hour, digest_weekday = excluded.digest_weekday,"
        "  min_score = excluded.min_score, updated_at = now() RETURNING *",
        tenant_id, owner_kind, owner_id, address.lower(), mode, digest_hour, digest_weekday, min_score,
    )


async def unsubscribe_address(conn: asyncpg.Connection, tenant_id: str, owner_kind: str, owner_id: str,
                              address: str) -> None:
    """Off for this address only; its other choices (hour, weekday) stay for a later opt-in."""
    await conn.execute(
        "INSERT INTO address_preferences (tenant_id, owner_kind, owner_id, address, mode)"
        " VALUES ($1, $2, $3, $4, 'off')"
        " ON CONFLICT (owner_kind, owner_id, address) DO UPDATE SET mode = 'off', updated_at = now()",
        tenant_id, owner_kind, owner_id, address.lower(),
    )


async def address_choices(conn: asyncpg.Connection, owner_kind: str, owner_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM address_preferences WHERE owner_kind = $1 AND owner_id = $2 ORDER BY address",
        owner_kind, owner_id)


async def delete_address_choice(conn: asyncpg.Connection, owner_kind: str, owner_id: str, address: str) -> bool:
    result = await conn.execute(
        "DELETE FROM address_preferences WHERE owner_kind = $1 AND owner_id = $2 AND address = $3",
        owner_kind, owner_id, address.lower())
    return result != "DELETE 0"


# --- digests -----------------------------------------------------------------------------------

async def add_digest_item(conn: asyncpg.Connection, notice: asyncpg.Record, owner_kind: str, owner_id: str,
                          address: str) -> None:
    await conn.execute(
        "INSERT INTO digest_items (tenant_id, owner_kind, owner_id, address, notice_id, match_id, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        notice["tenant_id"], owner_kind, owner_id, address.lower(), notice["id"], notice["match_id"],
        notice["payload"],
    )


async def open_digest_recipients(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM open_digest_recipients()")


async def insert_digest(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    """The digest of one recipient and period; a second beat (or a second run) finds it there."""
    created = await conn.fetchval(
        "INSERT INTO deliveries (id, tenant_id, kind, idempotency_key, provider_id, owner_kind, owner_id, period,"
        "  recipient, payload, message_id)"
        " VALUES ($1, $2, 'digest', $3, $4, $5, $6, $7, $8, '{}'::jsonb, $9)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING true",
        row["id"], row["tenant_id"], row["idempotency_key"], row["provider_id"], row["owner_kind"], row["owner_id"],
        row["period"], row["recipient"], row["message_id"],
    )
    return bool(created)


async def take_digest_items(conn: asyncpg.Connection, digest: dict[str, Any]) -> int:
    """The recipient's waiting items (of matches still standing) become this digest's."""
    result = await conn.execute(
        "UPDATE digest_items i SET digest_id = $1"
        " FROM deliveries n WHERE n.id = i.notice_id AND n.status <> 'cancelled'"
        "  AND i.digest_id IS NULL AND i.owner_kind = $2 AND i.owner_id = $3 AND i.address = $4",
        digest["id"], digest["owner_kind"], digest["owner_id"], digest["recipient"],
    )
    return int(result.split()[-1])


async def cancel_delivery(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> None:
    await conn.execute("UPDATE deliveries SET status = 'cancelled', updated_at = now() WHERE id = $1", delivery_id)


async def digest_matches(conn: asyncpg.Connection, digest_id: uuid.UUID) -> list[dict[str, Any]]:
    """What a digest holds when it is sent: items whose match was retracted since are left out."""
    rows = await conn.fetch(
        "SELECT i.payload FROM digest_items i JOIN deliveries n ON n.id = i.notice_id"
        " WHERE i.digest_id = $1 AND n.status <> 'cancelled' ORDER BY i.created_at", digest_id)
    return [r["payload"] for r in rows]


# --- deliveries --------------------------------------------------------------------------------

async def insert_delivery(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    """A new delivery, or the same one again (replay, redelivery): nothing changes then. True if new."""
    created = await conn.fetchval(
        "INSERT INTO deliveries (id, tenant_id, kind, idempotency_key, match_id, demand_id, demand_tenant,"
        "  offer_id, provider_id, owner_kind, owner_id, recipient, payload, message_id, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING true",
        row["id"], row["tenant_id"], row["kind"], row["idempotency_key"], row["match_id"], row["demand_id"],
        row["demand_tenant"], row["offer_id"], row.get("provider_id"), row["owner_kind"], row["owner_id"],
        row["recipient"], row["payload"], row["message_id"], row["traceparent"],
    )
    return bool(created)


async def reopen_cancelled(conn: asyncpg.Connection, match_id: uuid.UUID, match: dict[str, Any]) -> tuple[int, bool]:
    """A restored match's deliveries in the acting tenant that its retraction cancelled are pending
    again, with the match as it holds now. Returns how many, and whether its provider had any
    delivery of it at all (told, or about to be)."""
    row = await conn.fetchrow(
        "WITH reopened AS ("
        "  UPDATE deliveries SET status = 'pending', payload = $2, next_attempt_at = now(), enqueued_at = NULL,"
        "   updated_at = now() WHERE match_id = $1 AND status = 'cancelled' RETURNING 1)"
        " SELECT (SELECT count(*) FROM reopened) AS reopened,"
        "  EXISTS (SELECT 1 FROM deliveries WHERE match_id = $1 AND owner_kind = 'provider') AS told",
        match_id, match)
    return row["reopened"], row["told"]


async def hold_provider(conn: asyncpg.Connection, provider_id: uuid.UUID | str) -> None:
    """Until the transaction ends: a match waiting for its provider, the provider's arrival and a
    match's retraction take turns (two consumer processes). Else a match could be parked while the
    provider's arrival looked for parked matches, and never be mailed; or the arrival could make a
    retracted match's mail while the retraction looked for mails to cancel."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('notifications-provider'), hashtext($1))",
                       str(provider_id))


async def wait_for_provider(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO waiting_matches (match_id, provider_id, tenant_id, demand_id, demand_tenant, payload, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        row["match_id"], row["provider_id"], row["tenant_id"], row["demand_id"], row["demand_tenant"], row["payload"],
        row["traceparent"],
    )


async def take_waiting_matches(conn: asyncpg.Connection, provider_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch("DELETE FROM waiting_matches WHERE provider_id = $1 RETURNING *", provider_id)


async def forget_waiting_match(conn: asyncpg.Connection, match_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM waiting_matches WHERE match_id = $1", match_id)


async def cancel_for_demand(conn: asyncpg.Connection, demand_id: uuid.UUID, demand_tenant: str) -> int:
    """Across the providers' tenants (SECURITY DEFINER function)."""
    return await conn.fetchval("SELECT cancel_for_demand($1, $2)", demand_id, demand_tenant)


async def cancel_pending_for_match(conn: asyncpg.Connection, match_id: uuid.UUID) -> int:
    """What has not gone out: pending mails, and matches still waiting for a digest."""
    result = await conn.execute(
        f"UPDATE deliveries d SET status = 'cancelled', updated_at = now() WHERE match_id = $1 AND {NOT_GONE_OUT}",
        match_id,
    )
    return int(result.split()[-1])


async def delivery_tenant(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> str | None:
    return await conn.fetchval("SELECT delivery_tenant($1)", delivery_id)


async def lock_delivery(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    """Locked until the transaction ends: a second worker with the same delivery waits here.
    (NO KEY UPDATE: attempts logged from another connection may still reference the row.) With the
    row come its attempt log's facts: ``accepted_attempt``, an attempt the SMTP server accepted whose
    delivery never committed (the worker died); ``interrupted``, whether an attempt was left
    'started'; ``next_attempt``, the next attempt's number. One round trip instead of three: the
    worker does this for every mail."""
    return await conn.fetchrow(
        "SELECT d.*, now() AS db_now,"
        " (SELECT a.attempt FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.outcome = 'accepted')"
        "   AS accepted_attempt,"
        " EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.outcome = 'started')"
        "   AS interrupted,"
        " (SELECT coalesce(max(a.attempt), 0) + 1 FROM delivery_attempts a WHERE a.delivery_id = d.id)"
        "   AS next_attempt"
        " FROM deliveries d WHERE d.id = $1 FOR NO KEY UPDATE OF d", delivery_id)


async def mark_interrupted(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> None:
    """Attempts left 'started' by a worker that died are 'interrupted'."""
    await conn.execute(
        "UPDATE delivery_attempts SET outcome = 'interrupted', finished_at = now(),"
        "  error = 'Versand abgebrochen (Worker beendet)' WHERE delivery_id = $1 AND outcome = 'started'",
        delivery_id,
    )


async def mark_accepted(conn: asyncpg.Connection, delivery_id: uuid.UUID, attempt: int) -> None:
    await conn.execute(
        "UPDATE delivery_attempts SET outcome = 'accepted' WHERE delivery_id = $1 AND attempt = $2",
        delivery_id, attempt)


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
        "match_id": _text(r["match_id"]),
        "demand_id": _text(r["demand_id"]),
        "offer_id": _text(r["offer_id"]),
        "provider_id": _text(r["provider_id"]),
        "owner_kind": r["owner_kind"],
        "period": r["period"],
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


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
