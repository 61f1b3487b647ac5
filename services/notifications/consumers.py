"""Kafka entrypoints: a validated event in, its effects written in the inbox transaction.

The inbox transaction arrives with the event's tenant set (``ce_tenant``). A MatchFound belongs
to the demand's tenant, but the delivery belongs to the provider's: the handler switches tenant
for the insert. Nothing is sent from here: the delivery row commits with the inbox row, a NOTIFY
wakes the dispatcher, and only then is a Celery task enqueued (see ``dispatcher.py``).
"""

from __future__ import annotations

import uuid

import asyncpg

from contracts import MATCH_FOUND, MATCH_RETRACTED, PROVIDER_REGISTERED, PROVIDER_UPDATED
from runtime.db import set_tenant
from runtime.events import Event
from runtime.inbox import EventHandler
from runtime.tenancy import TENANT_HANDLERS
from services.notifications import domain, store
from services.notifications.settings import NotificationsSettings


async def on_match_found(conn: asyncpg.Connection, event: Event, settings: NotificationsSettings) -> None:
    match = event.data
    if match.get("status", "active") != "active":
        return
    offer = match["offer"]
    key = domain.match_key(match["id"], offer["provider_id"])
    await set_tenant(conn, offer["tenant"])
    created = await store.insert_delivery(conn, {
        "id": domain.delivery_id_for(key),
        "tenant_id": offer["tenant"],
        "kind": domain.KIND_MATCH_FOUND,
        "idempotency_key": key,
        "match_id": uuid.UUID(match["id"]),
        "demand_id": uuid.UUID(match["demand"]["id"]),
        "demand_tenant": match["tenant"],
        "offer_id": uuid.UUID(offer["id"]),
        "provider_id": uuid.UUID(offer["provider_id"]),
        "payload": match,
        "message_id": domain.message_id_for(key, settings.message_id_domain),
        "traceparent": event.traceparent,
    })
    if created:
        await store.wake_dispatcher(conn)
    await set_tenant(conn, event.tenant)


async def on_match_retracted(conn: asyncpg.Connection, event: Event) -> None:
    """A match that no longer holds is not announced any more (a mail already sent stays sent)."""
    await set_tenant(conn, event.data["offer"]["tenant"])
    await store.cancel_pending_for_match(conn, uuid.UUID(event.data["id"]))
    await set_tenant(conn, event.tenant)


async def on_provider(conn: asyncpg.Connection, event: Event) -> None:
    state = event.data
    await set_tenant(conn, state["tenant"])
    if await store.upsert_provider(conn, state) and await store.make_due_for_provider(conn, uuid.UUID(state["id"])):
        await store.wake_dispatcher(conn)
    await set_tenant(conn, event.tenant)


def create_handlers(settings: NotificationsSettings) -> dict[str, EventHandler]:
    async def match_found(conn: asyncpg.Connection, event: Event) -> None:
        await on_match_found(conn, event, settings)

    return {
        MATCH_FOUND: match_found,
        MATCH_RETRACTED: on_match_retracted,
        PROVIDER_REGISTERED: on_provider,
        PROVIDER_UPDATED: on_provider,
        **TENANT_HANDLERS,
    }
