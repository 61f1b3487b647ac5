"""A demand's kept ranking (its first pages, kept in order by the full ranking of its POST or PUT):
a page from it is the page a full ranking gives, and an offer change that reaches the demand forgets
it. On a matching database of its own, with the real encoder."""

from __future__ import annotations

import uuid

import asyncpg

from contracts import OFFER_PUBLISHED, OFFER_UPDATED
from runtime.db import set_tenant, tenant_transaction
from runtime.events import Event
from services.matching import handlers, store
from services.matching.domain import DemandIn
from services.matching.index import from_bytes
from tests.platform import demand_body, future, offer_body

TOPICS = [
    ("Gabelstapler-Führerschein mit Prüfung", ["Gabelstapler", "Flurförderzeuge"]),
    ("Staplerschein für Lagerhelfer", ["Flurförderzeuge", "Lager"]),
    ("Fahrausweis für Flurförderzeuge nach DGUV 308-001", ["DGUV 308-001"]),
    ("Lagerlogistik kompakt", ["Lagerlogistik", "Kommissionierung"]),
    ("Kranführerschein", ["Kran", "Anschlagen"]),
    ("Erste Hilfe im Betrieb", ["Erste Hilfe"]),
    ("MAG-Schweißen Grundkurs", ["Schweißen"]),
    ("Excel für Einsteiger", ["Excel", "Tabellen"]),
    ("Hubarbeitsbühnen sicher bedienen", ["Hubarbeitsbühne", "PSA"]),
    ("Ladungssicherung im Lager", ["Ladungssicherung", "Lager"]),
]


async def _offer_event(pool: asyncpg.Pool, offer: dict, event_type: str = OFFER_PUBLISHED) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await set_tenant(conn, "lueneburg")
        await handlers.offer_changed(conn, Event(event_type, "catalog", "lueneburg", offer["id"], offer))


def _offer(title: str, skills: list[str], n: int) -> dict:
    location = {"zip": "21335", "city": "Lüneburg", "lat": 53.25 + n / 1000, "lon": 10.41}
    return offer_body(str(uuid.uuid4()), title=title, skills=skills, description=f"{title}: {', '.join(skills)}.",
                      sessions=[{"start": future(30 + n), "end": future(32 + n), "location": location}]
                      ) | {"id": str(uuid.uuid4()), "tenant": "lueneburg", "status": "published", "version": 1}


async def _pages(pool: asyncpg.Pool, demand_id: str) -> tuple[list | None, list, asyncpg.Record | None]:
    """The first page from the kept order (None: none kept), the full ranking, and the kept order."""
    async with tenant_transaction(pool, "lueneburg") as conn:
        row = await store.get_demand(conn, demand_id)
        kept = await handlers.kept_page(conn, row, 0, 20)
        full, _, _, _ = await handlers.rank_demand(conn, row["state"], from_bytes(row["vector"]), tail=20)
        return kept, full, await store.kept_ranking(conn, demand_id)


async def _ten_offers_and_a_demand(pool: asyncpg.Pool) -> tuple[list[dict], dict]:
    """The ten TOPICS near Lüneburg, and a forklift demand there."""
    offers = [_offer(title, skills, n) for n, (title, skills) in enumerate(TOPICS)]
    for offer in offers:
        await _offer_event(pool, offer)
    async with tenant_transaction(pool, "lueneburg") as conn:
        demand = await handlers.open_demand(conn, "lueneburg", DemandIn.model_validate(demand_body()), "test")
    return offers, demand


def _page(ranked) -> list[tuple]:
    return [(r.offer_id, r.score, r.reasons) for r in ranked]


async def test_a_kept_page_is_the_full_rankings_page_until_an_offer_change_reaches_the_demand(
        matching_pool: asyncpg.Pool, monkeypatch) -> None:
    # judged pair by pair, as a demand with many feasible offers is (this one has ten)
    monkeypatch.setattr(handlers, "RANK_IN_FULL_BELOW", 0)
    pool = matching_pool
    offers, demand = await _ten_offers_and_a_demand(pool)

    kept, full, ranking = await _pages(pool, demand["id"])
    assert ranking["total"] == 10 and len(ranking["offers"]) == 10
    assert kept is not None and _page(kept[0]) == _page(full[:20])
    assert kept[2] == 10
    assert _page(full)[0][0] in {o["id"] for o in offers[:3]}  # a forklift course first, by meaning
    page, _, _ = await _kept(pool, demand["id"], 3, 4)
    assert [r.offer_id for r in page] == [r.offer_id for r in full[3:7]]

    # a new offer near the demand reaches it: the kept order is forgotten (a page ranks in full)
    await _offer_event(pool, _offer("Staplerfahrer-Ausbildung kompakt", ["Gabelstapler"], 11))
    kept, full, ranking = await _pages(pool, demand["id"])
    assert ranking is None and kept is None and len(full) == 11
    # a change of the demand ranks it in full and keeps the order again
    await _change_demand(pool, demand["id"])
    kept, full, ranking = await _pages(pool, demand["id"])
    assert kept is not None and _page(kept[0]) == _page(full[:20]) and len(ranking["offers"]) == 11
    # an offer moved far away: its old place reached the demand, so the order is forgotten
    far = offers[5] | {"version": 2, "sessions": [{"start": future(30), "location": {
        "zip": "80331", "city": "München", "lat": 48.14, "lon": 11.58}}]}
    await _offer_event(pool, far, OFFER_UPDATED)
    kept, full, ranking = await _pages(pool, demand["id"])
    assert ranking is None and far["id"] not in [r.offer_id for r in full]
    # changed again far away, it reaches nothing: the order kept since stays
    await _change_demand(pool, demand["id"])
    await _offer_event(pool, far | {"version": 3, "price_eur": 100}, OFFER_UPDATED)
    kept, full, ranking = await _pages(pool, demand["id"])
    assert ranking is not None and _page(kept[0]) == _page(full[:20])


async def test_a_demand_with_few_offers_is_ranked_in_full_when_an_offer_reaches_it(
        matching_pool: asyncpg.Pool) -> None:
    """Its expanded vector and kept order then come from all its offers, the new one too, not from
    those it had when it was posted."""
    pool = matching_pool
    _, demand = await _ten_offers_and_a_demand(pool)
    async with tenant_transaction(pool, "lueneburg") as conn:
        before = await store.get_demand(conn, demand["id"])
    assert before["ranked_total"] == 10 < handlers.RANK_IN_FULL_BELOW
    new = _offer("Staplerfahrer-Ausbildung kompakt", ["Gabelstapler"], 11)
    await _offer_event(pool, new)
    kept, full, ranking = await _pages(pool, demand["id"])
    assert ranking is not None and ranking["total"] == 11 and new["id"] in [str(i) for i in ranking["offers"]]
    assert kept is not None and _page(kept[0]) == _page(full[:20])
    async with tenant_transaction(pool, "lueneburg") as conn:
        after = await store.get_demand(conn, demand["id"])
    assert after["ranked_total"] == 11 and after["ranking_vector"] != before["ranking_vector"]


async def _change_demand(pool: asyncpg.Pool, demand_id: str) -> None:
    async with tenant_transaction(pool, "lueneburg") as conn:
        row = await store.get_demand(conn, demand_id, lock=True)
        await handlers.change_demand(conn, "lueneburg", row, DemandIn.model_validate(demand_body()),
                                     whole_network=True)


async def _kept(pool: asyncpg.Pool, demand_id: str, first: int, count: int):
    async with tenant_transaction(pool, "lueneburg") as conn:
        return await handlers.kept_page(conn, await store.get_demand(conn, demand_id), first, count)


async def test_a_page_beyond_the_fully_ranked_offers_lists_the_rest_by_meaning(matching_pool: asyncpg.Pool) -> None:
    """Past the offers ranked in full (``depth``), a deep page lists the other feasible offers by the
    first step's meaning alone, each once, read through row-level security like the head."""
    pool = matching_pool
    offers, demand = await _ten_offers_and_a_demand(pool)
    async with tenant_transaction(pool, "lueneburg") as conn:
        row = await store.get_demand(conn, demand["id"])
        ranked, _, total, _ = await handlers.rank_demand(conn, row["state"], from_bytes(row["vector"]),
                                                         depth=3, tail=8)
    assert total == 10 and len(ranked) == 8
    assert len({r.offer_id for r in ranked}) == 8 and {r.offer_id for r in ranked} <= {o["id"] for o in offers}
    assert all(r.reasons for r in ranked[:3]) and not any(r.reasons for r in ranked[3:])
    tail = [r.score for r in ranked[3:]]
    assert tail == sorted(tail, reverse=True) and tail[0] > 0
