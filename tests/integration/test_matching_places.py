"""A better offer arriving later takes the weakest match's place, also where the pair is judged alone
against the demand's kept ranking (an offer event reaching a demand with many feasible offers). In-process
on a matching database of its own: the bound below which a demand is ranked in full is lowered, so
that a few offers stand for many."""

from __future__ import annotations

import json
import uuid

import asyncpg

from contracts import MATCH_FOUND, MATCH_RETRACTED, MATCHES_TOPIC, OFFER_PUBLISHED
from runtime.db import set_tenant, tenant_transaction
from runtime.events import Event
from services.matching import handlers
from services.matching.domain import DemandIn
from services.matching.relevance import MAX_MATCHES_PER_DEMAND
from tests.platform import demand_body, future, offer_body

HERE = {"zip": "21335", "city": "Lüneburg", "lat": 53.25, "lon": 10.41}


def _offer(**changes) -> dict:
    return offer_body(str(uuid.uuid4()), **changes) | {"id": str(uuid.uuid4()), "tenant": "lueneburg",
                                                       "status": "published", "version": 1}


async def _publish(pool: asyncpg.Pool, offer: dict) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await set_tenant(conn, "lueneburg")
        await handlers.offer_changed(conn, Event(OFFER_PUBLISHED, "catalog", "lueneburg", offer["id"], offer))


async def _matches(pool: asyncpg.Pool, demand_id: str) -> dict[str, str]:
    async with tenant_transaction(pool, "lueneburg") as conn:
        rows = await conn.fetch("SELECT offer_id::text, status FROM matches WHERE demand_id = $1", uuid.UUID(demand_id))
    return {r["offer_id"]: r["status"] for r in rows}


async def _events(pool: asyncpg.Pool, offer_id: str) -> list[str]:
    """The match events written for the offer, in order."""
    async with tenant_transaction(pool, "lueneburg") as conn:
        rows = await conn.fetch("SELECT event_type, payload FROM outbox WHERE topic = $1 ORDER BY id", MATCHES_TOPIC)
    return [r["event_type"] for r in rows if json.loads(bytes(r["payload"]))["offer"]["id"] == offer_id]


async def test_a_better_offer_judged_alone_takes_the_weakest_matchs_place(matching_pool: asyncpg.Pool,
                                                                           monkeypatch) -> None:
    monkeypatch.setattr(handlers, "RANK_IN_FULL_BELOW", 0)  # judged pair by pair, as with many offers
    pool = matching_pool
    unrelated = {"title": "Schweißen MAG: Kehlnähte", "skills": ["MAG-Schweißen"],
                 "description": "Schweißtechnik für Metallbauer: Kehlnähte, Stumpfnähte, Prüfung nach DIN EN ISO 9606."}
    for _ in range(8):  # feasible, no match: with them the demand keeps its expanded vector
        await _publish(pool, _offer(**unrelated, sessions=[{"start": future(40), "location": HERE}]))
    far_late = [{"start": future(80), "end": future(82), "location": HERE | {"lat": 53.32}}]
    weaker = [_offer(schedule="evening", sessions=far_late) for _ in range(MAX_MATCHES_PER_DEMAND)]
    for offer in weaker:
        await _publish(pool, offer)
    body = demand_body(employer={"name": "Logistik Heide GmbH", "employees": 35, **HERE}, max_distance_km=10)
    async with tenant_transaction(pool, "lueneburg") as conn:
        demand = await handlers.open_demand(conn, "lueneburg", DemandIn.model_validate(body), "test")
        row = await conn.fetchrow("SELECT ranking_vector, ranked_total FROM demands WHERE id = $1",
                                  uuid.UUID(demand["id"]))
    assert row["ranking_vector"] is not None and row["ranked_total"] == 8 + MAX_MATCHES_PER_DEMAND
    assert await _matches(pool, demand["id"]) == {o["id"]: "active" for o in weaker}

    better = _offer(sessions=[{"start": future(40), "end": future(42), "location": HERE}])
    await _publish(pool, better)
    matches = await _matches(pool, demand["id"])
    assert matches[better["id"]] == "active"
    assert sorted(matches[o["id"]] for o in weaker) == ["active", "retracted"]
    dropped = next(o["id"] for o in weaker if matches[o["id"]] == "retracted")
    assert await _events(pool, dropped) == [MATCH_FOUND, MATCH_RETRACTED]
    assert await _events(pool, better["id"]) == [MATCH_FOUND]
    async with tenant_transaction(pool, "lueneburg") as conn:  # what the providers see of the demand
        shown = {r["offer_id"] for r in await conn.fetch(
            "SELECT offer_id::text FROM provider_matches WHERE demand_id = $1", uuid.UUID(demand["id"]))}
    assert better["id"] in shown and dropped not in shown


async def test_offers_encoded_ahead_with_their_batch_are_not_encoded_again(matching_pool: asyncpg.Pool,
                                                                           monkeypatch) -> None:
    """The consumer's preparer encodes a batch's new offers together; handling each event then uses
    that vector (the encoder is not asked again) and keeps it as the offer's, also for two offers of
    one text (the same course at two places)."""
    from services.matching import clusters, relevance, store
    from services.matching.index import from_bytes

    pool = matching_pool
    clusters.warm()  # the occupational areas' own vectors, encoded once per process: not the offers' concern
    offers = [_offer(description=f"Gabelstapler sicher fahren, Teil {n}: Theorie, Praxis und Prüfung.",
                     sessions=[{"start": future(40), "location": HERE}]) for n in (1, 2)]
    offers.append({**_offer(description=offers[0]["description"], sessions=offers[0]["sessions"]),
                   "title": offers[0]["title"]})
    assert relevance.offer_text(offers[2]) == relevance.offer_text(offers[0])
    monkeypatch.setattr(handlers, "_prepared", handlers.PreparedVectors())
    await handlers.prepare_offers([Event(OFFER_PUBLISHED, "catalog", "lueneburg", o["id"], o) for o in offers])
    ahead = {o["id"]: handlers._prepared._vectors[handlers._text_hash(relevance.offer_text(o))] for o in offers}

    class Refusing:
        def encode(self, texts, kind):
            raise AssertionError(f"encoded again: {texts}")

    with monkeypatch.context() as patched:
        patched.setattr(relevance, "load_encoder", Refusing)
        for offer in offers:
            await _publish(pool, offer)
    async with tenant_transaction(pool, "lueneburg") as conn:
        kept = await store.stored_vectors(conn, list(ahead))
    assert {i: from_bytes(v).tolist() for i, v in kept.items()} == {i: v.tolist() for i, v in ahead.items()}
