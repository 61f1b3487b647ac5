"""Digests: a recipient who chose a daily or weekly digest gets one mail per period gathering the
matches that waited for it. Run by Celery beat every ``digest_check_seconds``.

Safe against two beats (or a beat restarted mid-run): a digest is a delivery named by its
recipient and period (``digest:<owner>:<address>:<2027-03-20>``), so a second run finds it there
and makes nothing; the items it gathers are taken in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from runtime.db import system_transaction, tenant_transaction
from services.notifications import domain, store
from services.notifications.settings import NotificationsSettings


async def _choice(conn: asyncpg.Connection, owner_kind: str, owner_id: str, address: str) -> domain.Choice:
    for row in await store.address_choices(conn, owner_kind, owner_id):
        if row["address"] == address:
            return domain.Choice(row["mode"], row["digest_hour"], row["digest_weekday"])
    if owner_kind == "provider":
        preference = await store.get_preference(conn, uuid.UUID(owner_id))
        if preference is not None:
            return domain.Choice(preference["mode"], preference["digest_hour"], preference["digest_weekday"])
    return domain.Choice("off")


async def collect_digests(settings: NotificationsSettings, pool: asyncpg.Pool, now: datetime) -> int:
    """Make the digests due at ``now``; returns how many were made."""
    async with system_transaction(pool) as conn:
        recipients = await store.open_digest_recipients(conn)
    made = 0
    for r in recipients:
        async with tenant_transaction(pool, r["tenant_id"]) as conn:
            choice = await _choice(conn, r["owner_kind"], r["owner_id"], r["address"])
            if choice.mode == "instant":  # switched from digest to instant: what waited goes out now
                period = f"{now.date().isoformat()}-{now.strftime('%H%M')}"
            else:
                period = domain.digest_period(choice, now)
            if period is None:
                continue  # not due yet; or off: what waited stays, unsent, for a later opt-in
            key = domain.digest_key(r["owner_kind"], r["owner_id"], r["address"], period)
            digest = {
                "id": domain.delivery_id_for(key), "tenant_id": r["tenant_id"], "idempotency_key": key,
                "provider_id": uuid.UUID(r["owner_id"]) if r["owner_kind"] == "provider" else None,
                "owner_kind": r["owner_kind"], "owner_id": r["owner_id"], "period": period,
                "recipient": r["address"], "message_id": domain.message_id_for(key, settings.message_id_domain),
            }
            if not await store.insert_digest(conn, digest):
                continue  # this period's digest exists: later items wait for the next period
            if await store.take_digest_items(conn, digest):
                await store.wake_dispatcher(conn)
                made += 1
            else:
                await store.cancel_delivery(conn, digest["id"])  # everything it would hold was retracted
    return made
