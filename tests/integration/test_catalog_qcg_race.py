"""A provider's certification changes while one of its offers claiming qcg is written: once both
have committed, the offer must not say qcg under a certification that does not allow it. The offer
write holds the provider's row (handlers._check_offer), so each test checks that the later of the
two really waited for the other. In-process, on a catalog database of the test's own."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import asyncpg
import pytest

from runtime.db import tenant_transaction
from runtime.errors import Conflict
from services.catalog import handlers, store
from services.catalog.domain import Acting, OfferIn, ProviderIn, RuleBroken
from tests.integration.catalog_setup import first_holds_second_waits

TENANT = "lueneburg"
ADMIN = Acting(TENANT, "network-admin", None)
CERTIFIED = {"certified": True, "valid_until": (date.today() + timedelta(days=400)).isoformat()}
WITHDRAWN = {"certified": False}


def _provider(azav: dict) -> ProviderIn:
    return ProviderIn(name="Förderträger", emails=["kurse@traeger.example"], azav=azav)


def _funded(provider_id: uuid.UUID) -> OfferIn:
    return OfferIn.model_validate({
        "provider_id": provider_id, "title": "Fachkraft Lagerlogistik", "format": "online", "schedule": "full_time",
        "qualification": "retraining", "hours": 480, "funding": {"qcg": True},
        "sessions": [{"start": (date.today() + timedelta(days=60)).isoformat()}]})


async def _new_provider(pool: asyncpg.Pool) -> uuid.UUID:
    async with tenant_transaction(pool, TENANT) as conn:
        await store.set_acting(conn, ADMIN)
        await store.hold_sharing(conn, TENANT)  # the network's row exists: no write waits on its making
        provider = await handlers.register_provider(conn, ADMIN, _provider(CERTIFIED), becomes_member=False)
    return uuid.UUID(provider["id"])


async def _in_own_transaction(pool: asyncpg.Pool, write):
    async with tenant_transaction(pool, TENANT) as conn:
        await store.set_acting(conn, ADMIN)
        return await write(conn)


async def _funding_of(pool: asyncpg.Pool, provider_id: uuid.UUID) -> list[bool]:
    async with tenant_transaction(pool, TENANT) as conn:
        return [r["qcg"] for r in await conn.fetch(
            "SELECT (funding ->> 'qcg')::boolean AS qcg FROM offers WHERE provider_id = $1", provider_id)]


async def test_an_offer_written_while_its_provider_loses_azav_is_refused_its_qcg(catalog_pool) -> None:
    provider_id = await _new_provider(catalog_pool)
    with pytest.raises(RuleBroken) as refused:
        await first_holds_second_waits(
            catalog_pool, ADMIN,
            lambda conn: handlers.change_provider(conn, ADMIN, provider_id, _provider(WITHDRAWN)),
            lambda: _in_own_transaction(catalog_pool, lambda c: handlers.publish_offer(c, ADMIN, _funded(provider_id))))
    assert refused.value.field == "funding.qcg"
    assert await _funding_of(catalog_pool, provider_id) == []


@pytest.mark.parametrize("write", ["publish", "change"])
async def test_a_provider_losing_azav_while_an_offer_is_written_takes_its_qcg(catalog_pool, write: str) -> None:
    provider_id = await _new_provider(catalog_pool)
    offer_id = None
    if write == "change":  # an offer without qcg, given qcg while the provider loses its certification
        plain = _funded(provider_id).model_copy(update={"funding": _funded(provider_id).funding.model_copy(
            update={"qcg": False})})
        offer_id = uuid.UUID((await _in_own_transaction(
            catalog_pool, lambda c: handlers.publish_offer(c, ADMIN, plain)))["id"])

    async def writing(conn: asyncpg.Connection) -> None:
        if offer_id is None:
            await handlers.publish_offer(conn, ADMIN, _funded(provider_id))
        else:
            await handlers.change_offer(conn, ADMIN, offer_id, _funded(provider_id))

    await first_holds_second_waits(
        catalog_pool, ADMIN, writing,
        lambda: _in_own_transaction(catalog_pool, lambda c: handlers.change_provider(
            c, ADMIN, provider_id, _provider(WITHDRAWN))))
    assert await _funding_of(catalog_pool, provider_id) == [False]


async def test_a_certification_change_during_an_import_of_its_provider_is_refused(catalog_pool) -> None:
    """The import checked its offers' qcg against the certification it read when it began, and locks
    them in its own order for minutes: a change of the certification meanwhile is a 409 (nothing
    changed), another change of the provider goes on."""
    provider_id = await _new_provider(catalog_pool)
    importing = await catalog_pool.acquire()
    tx = importing.transaction()
    await tx.start()
    try:
        await importing.execute(store.IMPORT_LOCK.format("pg_advisory_xact_lock"), str(provider_id))
        with pytest.raises(Conflict, match="import"):
            await _in_own_transaction(catalog_pool, lambda c: handlers.change_provider(
                c, ADMIN, provider_id, _provider(WITHDRAWN)))
        renamed = _provider(CERTIFIED).model_copy(update={"name": "Förderträger Hellweg"})
        await _in_own_transaction(catalog_pool, lambda c: handlers.change_provider(c, ADMIN, provider_id, renamed))
    finally:
        await tx.rollback()
        await catalog_pool.release(importing)
    async with tenant_transaction(catalog_pool, TENANT) as conn:
        provider = await store.get_provider(conn, provider_id)
    assert provider["name"] == "Förderträger Hellweg" and provider["azav"]["certified"] is True
