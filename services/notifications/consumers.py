"""Kafka entrypoints: a validated event in, its effects written in the inbox transaction.

The inbox transaction arrives with the event's tenant set (``ce_tenant``). A MatchFound belongs
to the demand's tenant, but a provider's delivery belongs to the provider's: the handler switches
tenant for the insert. Nothing is sent from here: the delivery rows (one per contact address)
commit with the inbox row, a NOTIFY wakes the dispatcher, and only then is a Celery task enqueued
(see ``dispatcher.py``). Fields matching may add to a match are read tolerantly.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from contracts import (
    DEMAND_CLOSED,
    MATCH_FOUND,
    MATCH_RESTORED,
    MATCH_RETRACTED,
    MATCHES_TOPIC,
    PROVIDER_REGISTERED,
    PROVIDER_UPDATED,
    TENANT_CREATED,
    TENANT_UPDATED,
)
from runtime.db import set_tenant
from runtime.events import Event
from runtime.inbox import EventHandler, apply_if_newer
from runtime.tenancy import upsert_known_tenant
from services.notifications import domain, store
from services.notifications.settings import NotificationsSettings

GROUP = "notifications"  # the consumer group, and its name in the inbox


def _notice_row(match: dict[str, Any], provider_id: str, address: str, traceparent: str | None,
                settings: NotificationsSettings) -> dict[str, Any]:
    offer = match["offer"]
    key = domain.match_key(match["id"], provider_id, address)
    return {
        "id": domain.delivery_id_for(key), "tenant_id": offer["tenant"], "kind": domain.KIND_MATCH_FOUND,
        "idempotency_key": key, "match_id": uuid.UUID(match["id"]), "demand_id": uuid.UUID(match["demand"]["id"]),
        "demand_tenant": match["tenant"], "offer_id": uuid.UUID(offer["id"]), "provider_id": uuid.UUID(provider_id),
        "owner_kind": "provider", "owner_id": provider_id, "recipient": address.lower(), "payload": match,
        "message_id": domain.message_id_for(key, settings.message_id_domain), "traceparent": traceparent,
    }


async def _notices_for(conn: asyncpg.Connection, match: dict[str, Any], provider: asyncpg.Record,
                       traceparent: str | None, settings: NotificationsSettings) -> bool:
    """One delivery per (match, contact address): exactly one mail per recipient."""
    created = False
    for address in dict.fromkeys(a.lower() for a in provider["emails"]):
        created |= await store.insert_delivery(conn, _notice_row(match, str(provider["id"]), address, traceparent,
                                                                 settings))
    return created


async def _offer_alerts(conn: asyncpg.Connection, match: dict[str, Any], traceparent: str | None,
                        settings: NotificationsSettings) -> bool:
    """An employer that opted in hears of a good new offer for its demand (the demand's owner, a
    firm or a user, when matching sends it)."""
    demand = match["demand"]
    owner = demand.get("owner") or demand.get("firm")
    if not isinstance(owner, str) or not owner:
        return False
    created = False
    for choice in await store.address_choices(conn, "employer", owner):
        min_score = choice["min_score"] or 0.0
        if choice["mode"] == "off" or not isinstance(match.get("score"), (int, float)) or match["score"] < min_score:
            continue
        key = domain.alert_key(match["id"], owner) + f":to:{choice['address']}"
        created |= await store.insert_delivery(conn, {
            "id": domain.delivery_id_for(key), "tenant_id": match["tenant"], "kind": domain.KIND_OFFER_ALERT,
            "idempotency_key": key, "match_id": uuid.UUID(match["id"]), "demand_id": uuid.UUID(demand["id"]),
            "demand_tenant": match["tenant"], "offer_id": uuid.UUID(match["offer"]["id"]), "provider_id": None,
            "owner_kind": "employer", "owner_id": owner, "recipient": choice["address"], "payload": match,
            "message_id": domain.message_id_for(key, settings.message_id_domain), "traceparent": traceparent,
        })
    return created


async def on_match_found(conn: asyncpg.Connection, event: Event, settings: NotificationsSettings,
                         alerts: bool = True) -> None:
    match = event.data
    if match.get("status", "active") != "active":
        return
    offer = match["offer"]
    await set_tenant(conn, offer["tenant"])
    await store.hold_provider(conn, offer["provider_id"])
    provider = await store.get_provider(conn, uuid.UUID(offer["provider_id"]))
    if provider is None:
        # The match came before the provider's registration: its deliveries are made when it comes.
        await store.wait_for_provider(conn, {
            "match_id": uuid.UUID(match["id"]), "provider_id": uuid.UUID(offer["provider_id"]),
            "tenant_id": offer["tenant"], "demand_id": uuid.UUID(match["demand"]["id"]),
            "demand_tenant": match["tenant"], "payload": match, "traceparent": event.traceparent})
        created = False
    else:
        created = await _notices_for(conn, match, provider, event.traceparent, settings)
    await set_tenant(conn, match["tenant"])
    if alerts:
        created |= await _offer_alerts(conn, match, event.traceparent, settings)
    if created:
        await store.wake_dispatcher(conn)
    await set_tenant(conn, event.tenant)


async def on_match_restored(conn: asyncpg.Connection, event: Event, settings: NotificationsSettings) -> None:
    """A retracted match that holds again (matching never announces a pair twice). What its
    retraction cancelled before it went out goes now; nothing else does: an address the provider
    added since, or an employer's alert chosen since, would announce an old match as new. Only a
    provider who was never told of it (no delivery at all: it had no address, or was not yet known)
    is told now, as on MatchFound."""
    match = event.data
    match_id = uuid.UUID(match["id"])
    offer = match["offer"]
    await set_tenant(conn, offer["tenant"])
    reopened, told = await store.reopen_cancelled(conn, match_id, match)
    await set_tenant(conn, match["tenant"])
    if match["tenant"] != offer["tenant"]:  # employers' alerts live in the demand's tenant
        reopened += (await store.reopen_cancelled(conn, match_id, match))[0]
    if reopened:
        await store.wake_dispatcher(conn)
    await set_tenant(conn, event.tenant)
    if not told:
        await on_match_found(conn, event, settings, alerts=False)


async def on_match_retracted(conn: asyncpg.Connection, event: Event) -> None:
    """A match that no longer holds is not announced any more (a mail already sent stays sent)."""
    match_id = uuid.UUID(event.data["id"])
    await set_tenant(conn, event.data["offer"]["tenant"])
    await store.hold_provider(conn, event.data["offer"]["provider_id"])
    await store.cancel_pending_for_match(conn, match_id)
    await store.forget_waiting_match(conn, match_id)
    await set_tenant(conn, event.data["tenant"])
    await store.cancel_pending_for_match(conn, match_id)  # employers' alerts live in the demand's tenant
    await set_tenant(conn, event.tenant)


async def on_demand_closed(conn: asyncpg.Connection, event: Event) -> None:
    """A closed demand: nothing about it goes out any more, in whichever tenant it waits."""
    await store.cancel_for_demand(conn, uuid.UUID(event.data["id"]), event.data.get("tenant", event.tenant))


def in_match_order(handle: EventHandler) -> EventHandler:
    """A match's events applied only in their order. They are keyed by their demand, whose sequence
    numbers them in commit order, so the inbox cannot order them by key (runtime.kafka.STATE_TOPICS):
    each match's last applied number is kept here. A stale one (a dead letter replayed after its
    match moved on: a MatchFound after its MatchRetracted, a MatchRetracted after its MatchRestored)
    changes nothing, where it would have mailed a retracted match or cancelled a mail due."""
    async def in_order(conn: asyncpg.Connection, event: Event) -> None:
        if await apply_if_newer(conn, GROUP, f"{MATCHES_TOPIC}/match/{event.data['id']}", event.sequence):
            await handle(conn, event)

    return in_order


def create_handlers(settings: NotificationsSettings) -> dict[str, EventHandler]:
    async def match_found(conn: asyncpg.Connection, event: Event) -> None:
        await on_match_found(conn, event, settings)

    async def match_restored(conn: asyncpg.Connection, event: Event) -> None:
        await on_match_restored(conn, event, settings)

    async def provider(conn: asyncpg.Connection, event: Event) -> None:
        state = event.data
        await set_tenant(conn, state["tenant"])
        await store.hold_provider(conn, state["id"])
        if await store.upsert_provider(conn, state):
            stored = await store.get_provider(conn, uuid.UUID(state["id"]))
            created = False
            for waiting in await store.take_waiting_matches(conn, stored["id"]):
                created |= await _notices_for(conn, waiting["payload"], stored, waiting["traceparent"], settings)
            if created:
                await store.wake_dispatcher(conn)
        await set_tenant(conn, event.tenant)

    async def tenant(conn: asyncpg.Connection, event: Event) -> None:
        await upsert_known_tenant(conn, event)
        await store.upsert_branding(conn, event.data)

    return {
        MATCH_FOUND: in_match_order(match_found),
        MATCH_RETRACTED: in_match_order(on_match_retracted),
        MATCH_RESTORED: in_match_order(match_restored),
        DEMAND_CLOSED: on_demand_closed,
        PROVIDER_REGISTERED: provider,
        PROVIDER_UPDATED: provider,
        TENANT_CREATED: tenant,
        TENANT_UPDATED: tenant,
    }
