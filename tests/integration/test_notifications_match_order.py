"""A match's events are applied in their order, also when one of them comes back late: a dead
letter replayed after its match moved on. Through the inbox's own path (EventConsumer) on a
notifications database of the test's own; nothing is sent, the deliveries' states say what would be."""

from __future__ import annotations

import uuid
from dataclasses import replace

import asyncpg
import pytest

from contracts import MATCH_RESTORED, MATCH_RETRACTED, MATCHES_TOPIC, PROVIDERS_TOPIC, TENANT_CREATED, TENANTS_TOPIC
from runtime.events import Event
from runtime.inbox import EventConsumer
from services.notifications.bootstrap import MIGRATIONS, NotificationsSettings
from services.notifications.consumers import GROUP, create_handlers
from tests.integration.conftest import _own_database
from tests.integration.test_notifications_delivery import T_A, address_of, match_event, provider_event


@pytest.fixture
async def consumer():
    settings = NotificationsSettings(env="test", database_prefix=f"bildungsraum_n{uuid.uuid4().hex[:8]}",
                                     unsubscribe_secret="s" * 40)
    async with _own_database(settings, MIGRATIONS) as pool:
        handlers = create_handlers(settings)
        inbox = EventConsumer(name=GROUP, pool=pool, handlers=handlers, consumer_factory=None,
                              producer_factory=None)

        async def handle(topic: str, event: Event) -> None:
            await inbox._handle_once(topic, event, handlers[event.type])

        await handle(TENANTS_TOPIC, Event(TENANT_CREATED, "identity", T_A, T_A,
                                          {"id": T_A, "name": "A", "status": "active"}))
        yield pool, handle


def _story(provider_id: str) -> tuple[Event, Event, Event]:
    """MatchFound, MatchRetracted, MatchRestored of one match, keyed and numbered as matching's outbox
    does (by the demand)."""
    found = match_event(provider_id)
    found = replace(found, key=found.data["demand"]["id"], sequence=1)
    retracted = Event(MATCH_RETRACTED, "matching", T_A, found.key, {**found.data, "status": "retracted"})
    restored = Event(MATCH_RESTORED, "matching", T_A, found.key, found.data)
    return found, replace(retracted, sequence=2), replace(restored, sequence=3)


async def _deliveries(pool: asyncpg.Pool, match_id: str) -> list[str]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", T_A)
        return [r["status"] for r in await conn.fetch("SELECT status FROM deliveries WHERE match_id = $1",
                                                      uuid.UUID(match_id))]


async def _provider(handle) -> str:
    provider_id = str(uuid.uuid4())
    await handle(PROVIDERS_TOPIC, replace(provider_event(T_A, provider_id, [address_of(provider_id)]), sequence=1))
    return provider_id


async def test_a_match_found_replayed_after_its_retraction_mails_nothing(consumer):
    pool, handle = consumer
    found, retracted, _ = _story(await _provider(handle))
    await handle(MATCHES_TOPIC, retracted)  # MatchFound was dead-lettered; its retraction came through
    await handle(MATCHES_TOPIC, found)      # the operator replays the dead letter
    assert await _deliveries(pool, found.data["id"]) == []  # before: one pending, a mail for a retracted match


async def test_a_retraction_replayed_after_its_match_was_restored_cancels_nothing(consumer):
    pool, handle = consumer
    found, retracted, restored = _story(await _provider(handle))
    await handle(MATCHES_TOPIC, found)
    assert await _deliveries(pool, found.data["id"]) == ["pending"]
    await handle(MATCHES_TOPIC, restored)   # its retraction was dead-lettered; the match holds again
    await handle(MATCHES_TOPIC, retracted)  # the retraction replayed late
    assert await _deliveries(pool, found.data["id"]) == ["pending"]  # before: cancelled, the mail lost


async def test_each_match_is_ordered_on_its_own(consumer):
    """Two matches of one demand share its numbers: a later number of one does not hold back the other."""
    pool, handle = consumer
    provider_id = await _provider(handle)
    first, _, _ = _story(provider_id)
    second = match_event(provider_id)
    second = replace(second, key=first.key, sequence=2,
                     data={**second.data, "demand": first.data["demand"]})
    await handle(MATCHES_TOPIC, second)
    await handle(MATCHES_TOPIC, first)  # number 1 after 2, but of another match: applied
    assert await _deliveries(pool, first.data["id"]) == ["pending"]
    assert await _deliveries(pool, second.data["id"]) == ["pending"]
