"""Catalog use cases: each changes the catalog and stages its event in the same transaction."""

from __future__ import annotations

import uuid

import asyncpg

from contracts import OFFERS_TOPIC, PROVIDER_REGISTERED, PROVIDER_UPDATED, PROVIDERS_TOPIC
from runtime.errors import Conflict, NotFound
from runtime.events import Event
from runtime.outbox import add_to_outbox
from services.catalog import store
from services.catalog.domain import OfferIn, ProviderIn, offer_event_type_for

SOURCE = "catalog"


async def register_provider(conn: asyncpg.Connection, tenant: str, body: ProviderIn) -> dict:
    try:
        async with conn.transaction():
            row = await store.insert_provider(conn, tenant, body)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a provider with external_id {body.external_id!r} exists") from None
    state = store.provider_state(row)
    await add_to_outbox(conn, PROVIDERS_TOPIC, Event(PROVIDER_REGISTERED, SOURCE, tenant, state["id"], state))
    return state


async def change_provider(conn: asyncpg.Connection, tenant: str, provider_id: uuid.UUID, body: ProviderIn) -> dict:
    row = await store.update_provider(conn, tenant, provider_id, body)
    if row is None:
        raise NotFound(f"provider {provider_id}")
    state = store.provider_state(row)
    await add_to_outbox(conn, PROVIDERS_TOPIC, Event(PROVIDER_UPDATED, SOURCE, tenant, state["id"], state))
    return state


async def _own_provider(conn: asyncpg.Connection, tenant: str, provider_id: uuid.UUID) -> None:
    provider = await store.get_provider(conn, provider_id)
    if provider is None or provider["tenant_id"] != tenant:
        raise NotFound(f"provider {provider_id}")


async def _announce(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, previous: str | None) -> dict:
    state = store.offer_state(await store.get_offer(conn, offer_id))
    event_type = offer_event_type_for(previous, state["status"])
    if event_type:
        await add_to_outbox(conn, OFFERS_TOPIC, Event(event_type, SOURCE, tenant, state["id"], state))
    return state


async def publish_offer(conn: asyncpg.Connection, tenant: str, body: OfferIn) -> dict:
    await _own_provider(conn, tenant, body.provider_id)
    try:
        async with conn.transaction():
            offer_id = await store.insert_offer(conn, tenant, body)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"the provider already has an offer with external_id {body.external_id!r}") from None
    return await _announce(conn, tenant, offer_id, None)


async def change_offer(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, body: OfferIn) -> dict:
    current = await _own_offer(conn, tenant, offer_id)
    if current["status"] == "withdrawn":
        raise Conflict("a withdrawn offer cannot be changed")
    await _own_provider(conn, tenant, body.provider_id)
    try:
        async with conn.transaction():
            await store.update_offer(conn, tenant, offer_id, body)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"the provider already has an offer with external_id {body.external_id!r}") from None
    return await _announce(conn, tenant, offer_id, current["status"])


async def withdraw_offer(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID) -> dict:
    current = await _own_offer(conn, tenant, offer_id)
    if current["status"] == "withdrawn":
        return store.offer_state(current)
    await store.set_offer_status(conn, tenant, offer_id, "withdrawn")
    return await _announce(conn, tenant, offer_id, current["status"])


async def _own_offer(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID) -> asyncpg.Record:
    row = await store.get_offer(conn, offer_id)
    if row is None or row["tenant_id"] != tenant:
        raise NotFound(f"offer {offer_id}")
    return row
