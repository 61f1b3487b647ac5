"""Catalog use cases: each changes the catalog and stages its event in the same transaction."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime

import asyncpg

from contracts import (
    OFFER_UPDATED,
    OFFER_WITHDRAWN,
    OFFERS_TOPIC,
    PROVIDER_REGISTERED,
    PROVIDER_UPDATED,
    PROVIDERS_TOPIC,
)
from runtime import audit, places
from runtime.db import tenant_transaction
from runtime.errors import Conflict, NotFound
from runtime.events import Event
from runtime.outbox import add_many_to_outbox, add_to_outbox
from services.catalog import store
from services.catalog.domain import (
    Acting,
    MembersIn,
    OfferIn,
    ProviderIn,
    RuleBroken,
    SharingIn,
    check_funding,
    offer_event_type_for,
)

log = logging.getLogger(__name__)

SOURCE = "catalog"
SYSTEM_SUBJECT = "system:catalog"  # the catalog itself, in the audit log (its sweeps)


class Forbidden(Exception):
    """The actor sees the thing but may not change it (answered 403)."""


class StaleWrite(Exception):
    """If-Match named a version that is no longer current (answered 412)."""

    def __init__(self, current_version: int) -> None:
        super().__init__(f"the offer is at version {current_version}")
        self.current_version = current_version


# ---- providers -------------------------------------------------------------------------------


async def _announce_provider(conn: asyncpg.Connection, tenant: str, provider_id: uuid.UUID, event_type: str) -> dict:
    state = store.provider_state(await store.get_provider(conn, provider_id))
    await add_to_outbox(conn, PROVIDERS_TOPIC, Event(event_type, SOURCE, tenant, state["id"], state))
    return state


async def register_provider(conn: asyncpg.Connection, acting: Acting, body: ProviderIn, *,
                            becomes_member: bool) -> dict:
    """A provider user who registers a provider becomes its member (it acts for it from now on)."""
    try:
        async with conn.transaction():
            provider_id = await store.insert_provider(conn, acting.tenant, body)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a provider with external_id {body.external_id!r} exists") from None
    if becomes_member:
        await store.set_acting(conn, replace(acting, providers=(acting.providers or frozenset()) | {str(provider_id)}))
        await store.add_member(conn, acting.tenant, provider_id, acting.subject)
    return await _announce_provider(conn, acting.tenant, provider_id, PROVIDER_REGISTERED)


async def get_provider(conn: asyncpg.Connection, provider_id: uuid.UUID) -> dict:
    row = await store.get_provider(conn, provider_id)
    if row is None:
        raise NotFound(f"provider {provider_id}")
    return store.provider_state(row)


async def list_providers(conn: asyncpg.Connection, acting: Acting, *, mine: bool) -> list[dict]:
    return [store.provider_state(r) for r in await store.list_providers(conn, acting.providers if mine else None)]


async def own_provider(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID, *,
                       hold: bool = False) -> asyncpg.Record:
    # (a row the actor may not update cannot be locked under row-level security: read, then refused)
    provider = await store.get_provider(conn, provider_id, hold=hold and acting.for_provider(provider_id))
    if provider is None or provider["tenant_id"] != acting.tenant:
        raise NotFound(f"provider {provider_id}")
    if not acting.for_provider(provider_id):
        raise Forbidden("a provider user acts only for its own providers")
    return provider


async def change_provider(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID, body: ProviderIn) -> dict:
    # Locks in the order every offer write takes them: the network's shares, the provider, its offers.
    await store.hold_sharing(conn, acting.tenant)
    current = await own_provider(conn, acting, provider_id)
    recertified = (body.azav.model_dump(mode="json") if body.azav else None) != current["azav"]
    if recertified and not await store.try_hold_imports(conn, provider_id):
        # the import checked its offers' qcg against the certification it read when it began
        raise Conflict("an import of this provider is running; change its certification once it is done")
    try:
        async with conn.transaction():
            await store.update_provider(conn, acting.tenant, provider_id, body)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a provider with external_id {body.external_id!r} exists") from None
    if recertified:
        await revoke_qcg(conn, acting, [provider_id], datetime.now(UTC).date())
    return await _announce_provider(conn, acting.tenant, provider_id, PROVIDER_UPDATED)


async def revoke_qcg(conn: asyncpg.Connection, acting: Acting, provider_ids: list[uuid.UUID] | None,
                     today: date) -> int:
    """The providers' offers (None: the network's) that may no longer say qcg (the AZAV certification
    ended, was withdrawn or ends before a session starts) lose the flag, in the transaction that
    learnt it; the published ones are announced, so search stops finding them as fundable and
    matching retracts them from demands that require funding. Answers how many. The caller holds
    the network's shares (store.hold_sharing), as every offer write does first."""
    revoked = await store.revoke_qcg(conn, acting.tenant, provider_ids, today)
    if not revoked:
        return 0
    published = [r["id"] for r in revoked if r["status"] == "published"]
    events = [Event(OFFER_UPDATED, SOURCE, acting.tenant, state["id"], state)
              for state in map(store.offer_state, await store.get_offers(conn, published))]
    if events:
        await add_many_to_outbox(conn, OFFERS_TOPIC, events)
    await audit.record(conn, acting.tenant, acting.subject, acting.username, "offers.qcg_revoked",
                       ",".join(sorted({str(r["provider_id"]) for r in revoked})),
                       {"offers": sorted(str(r["id"]) for r in revoked)})
    return len(revoked)


async def revoke_lapsed_qcg(pool: asyncpg.Pool, today: date | None = None) -> int:
    """Time's part of the qcg rule, and a net under it: every offer of the network that says qcg
    where the rule does not hold (a certificate run out, or an offer written before the rule asked
    for its last session) loses the flag, network by network (the catalog's sweep runs this; how
    many, answered). A network that fails is logged and left to the next round; the others go on."""
    today = today or datetime.now(UTC).date()
    revoked = 0
    for tenant in [r["id"] for r in await pool.fetch("SELECT id FROM known_tenants ORDER BY id")]:
        try:
            async with tenant_transaction(pool, tenant) as conn:
                system = Acting(tenant, SYSTEM_SUBJECT, None, "Bildungsraum")
                await store.set_acting(conn, system)
                await store.hold_sharing(conn, tenant)
                revoked += await revoke_qcg(conn, system, None, today)
        except (asyncpg.PostgresError, OSError):
            log.exception("taking qcg from the offers of %s failed; the next round tries again", tenant)
    return revoked


async def set_members(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID, body: MembersIn) -> dict:
    """network_admin decides who acts for a provider (route rule); the event carries the members."""
    await own_provider(conn, acting, provider_id)
    members = sorted(set(body.members))
    await store.set_members(conn, acting.tenant, provider_id, members)
    await store.touch_provider(conn, provider_id)
    await audit.record(conn, acting.tenant, acting.subject, acting.username, "provider.members_set",
                       str(provider_id), {"members": members})
    return await _announce_provider(conn, acting.tenant, provider_id, PROVIDER_UPDATED)


# ---- network sharing -------------------------------------------------------------------------


async def get_sharing(conn: asyncpg.Connection, acting: Acting) -> dict:
    return {"networks": await store.get_sharing(conn, acting.tenant)}


async def set_sharing(conn: asyncpg.Connection, acting: Acting, body: SharingIn) -> dict:
    """Share every published offer of the network with these networks too; each offer whose
    audience changed is announced, so matching sees (or stops seeing) it."""
    networks = sorted(set(body.networks) - {acting.tenant})
    before = await store.get_sharing(conn, acting.tenant)
    for offer_id in await store.set_sharing(conn, acting.tenant, networks):
        state = store.offer_state(await store.get_offer(conn, offer_id))
        await add_to_outbox(conn, OFFERS_TOPIC, Event(OFFER_UPDATED, SOURCE, acting.tenant, state["id"], state))
    if before != networks:
        await audit.record(conn, acting.tenant, acting.subject, acting.username, "sharing.set", acting.tenant,
                           {"before": before, "networks": networks})
    return {"networks": networks}


async def audit_log(conn: asyncpg.Connection, limit: int, offset: int) -> list[dict]:
    return await audit.read(conn, limit, offset)


# ---- offers ----------------------------------------------------------------------------------


def locate_sessions(body: OfferIn) -> OfferIn:
    """Sessions whose place lacks coordinates get them offline from postcode or town."""
    for index, session in enumerate(body.sessions):
        place = session.location
        if place is not None and place.lat is None:
            found = places.gazetteer().locate(place.zip, place.city)
            if found is None:
                raise RuleBroken(f"sessions.{index}.location",
                                 f"the place {place.zip} {place.city} was not found; give lat and lon")
            place.lat, place.lon = found
    return body


async def announce_offer(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, previous: str | None) -> dict:
    state = store.offer_state(await store.get_offer(conn, offer_id))
    event_type = offer_event_type_for(previous, state["status"])
    if event_type:
        await add_to_outbox(conn, OFFERS_TOPIC, Event(event_type, SOURCE, tenant, state["id"], state))
    return state


async def _check_offer(conn: asyncpg.Connection, acting: Acting, body: OfferIn) -> None:
    # held to commit: a change of the provider's certification waits for this write (and then takes
    # the offer's qcg if it no longer holds), or this write reads the changed certification
    provider = await own_provider(conn, acting, body.provider_id, hold=True)
    check_funding(body, provider["azav"], datetime.now(UTC).date())
    locate_sessions(body)


async def publish_offer(conn: asyncpg.Connection, acting: Acting, body: OfferIn) -> dict:
    await store.hold_sharing(conn, acting.tenant)  # locks in one order: shares, provider, offer
    await _check_offer(conn, acting, body)
    try:
        async with conn.transaction():
            offer_id = await store.insert_offer(conn, acting.tenant, body)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"the provider already has an offer with external_id {body.external_id!r}") from None
    return await announce_offer(conn, acting.tenant, offer_id, None)


async def get_offer(conn: asyncpg.Connection, acting: Acting, offer_id: uuid.UUID) -> dict:
    """An offer the network may see; drafts and withdrawn offers only for those acting for it."""
    row = await store.get_offer(conn, offer_id)
    if row is None or (row["status"] != "published" and not (
            row["tenant_id"] == acting.tenant and acting.for_provider(row["provider_id"]))):
        raise NotFound(f"offer {offer_id}")
    return store.offer_state(row)


async def _own_offer(conn: asyncpg.Connection, acting: Acting, offer_id: uuid.UUID,
                     if_match: int | None) -> asyncpg.Record:
    """The offer, locked to commit so writes of one offer are serialised, checked for ownership
    and against the version the writer last saw. The caller holds the network's shares first
    (store.hold_sharing: shares, provider, offer is every write's lock order)."""
    row = await store.get_offer(conn, offer_id, lock=True)
    if row is None or row["tenant_id"] != acting.tenant:
        raise NotFound(f"offer {offer_id}")
    if not acting.for_provider(row["provider_id"]):
        if row["status"] != "published":
            raise NotFound(f"offer {offer_id}")
        raise Forbidden("a provider user acts only for its own providers' offers")
    if if_match is not None and if_match != row["version"]:
        raise StaleWrite(row["version"])
    return row


async def change_offer(conn: asyncpg.Connection, acting: Acting, offer_id: uuid.UUID, body: OfferIn,
                       if_match: int | None = None) -> dict:
    await store.hold_sharing(conn, acting.tenant)  # locks in one order: shares, provider, offer
    await _check_offer(conn, acting, body)  # also: a moved offer goes only to a provider the actor acts for
    current = await _own_offer(conn, acting, offer_id, if_match)
    if current["status"] == "withdrawn":
        raise Conflict("a withdrawn offer cannot be changed")
    try:
        async with conn.transaction():
            await store.update_offer(conn, acting.tenant, offer_id, body)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"the provider already has an offer with external_id {body.external_id!r}") from None
    return await announce_offer(conn, acting.tenant, offer_id, current["status"])


async def withdraw_offer(conn: asyncpg.Connection, acting: Acting, offer_id: uuid.UUID,
                         if_match: int | None = None) -> dict:
    await store.hold_sharing(conn, acting.tenant)
    current = await _own_offer(conn, acting, offer_id, if_match)
    if current["status"] == "withdrawn":
        return store.offer_state(current)
    await store.set_offer_status(conn, acting.tenant, offer_id, "withdrawn")
    return await announce_offer(conn, acting.tenant, offer_id, current["status"])


async def withdraw_offers(conn: asyncpg.Connection, tenant: str, offer_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """``withdraw_offer`` for many offers an import withdraws, which the caller has checked are the
    actor's (a replaced catalogue, UPDATE_CATALOG's DELETE): one update, one read, one outbox batch.
    Marked as the import's: a later file that lists one again publishes it again. Returns those
    withdrawn now."""
    withdrawn = [r["id"] for r in await conn.fetch(
        "UPDATE offers SET status = 'withdrawn', withdrawn_by_import = true, version = version + 1, updated_at = now()"
        " WHERE id = ANY($1::uuid[]) AND status <> 'withdrawn' RETURNING id", offer_ids)]
    events = [Event(OFFER_WITHDRAWN, SOURCE, tenant, state["id"], state)
              for state in map(store.offer_state, await store.get_offers(conn, withdrawn))]
    if events:
        await add_many_to_outbox(conn, OFFERS_TOPIC, events)
    return withdrawn


# ---- search and the public view ----------------------------------------------------------------


FLOAT4_MAX = 3.4028234663852886e38


def encode_cursor(rank: float, offer_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(json.dumps([rank, str(offer_id)]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, uuid.UUID]:
    """The keyset position a cursor names; anything else is a ValueError."""
    try:
        rank, offer_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        rank = float(rank)
        if not abs(rank) <= FLOAT4_MAX:  # a rank is a PostgreSQL real: beyond it (or NaN), no cursor of ours
            raise ValueError(rank)
        return rank, uuid.UUID(offer_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError("not a cursor of this search") from exc


async def search_offers(conn: asyncpg.Connection, query: store.OfferQuery, *, with_facets: bool = False,
                        public: bool = False) -> dict:
    """A page of what the acting tenant may see, ranked; the total exact up to a bound. Long words are
    tried as two parts of a compound ("Staplerschein" → Gabelstapler-Führerschein) only when the text
    as written finds nothing, with or without the filters: a part such as "beruf*" matches a quarter of
    all offers, and searching every split of every long word made such searches 5–10 times as costly."""
    if query.q and store.text_query(query.q) is None:  # nothing searchable in the text: nothing found
        empty = {"items": [], "page_size": query.page_size, "next_cursor": None, "total": 0, "total_exceeds": False}
        return empty | ({"facets": {"format": {}, "schedule": {}, "qualification": {}, "funding": {}},
                         "facets_complete": True} if with_facets else {})
    facets, total, hits = await _counted(conn, query, with_facets)
    if total == 0 and store.splits_compounds(query.q) and not await store.count_offers(
            conn, store.OfferQuery(q=query.q), bound=1):  # the text itself, whatever the filters
        query = replace(query, compounds=True)
        facets, total, hits = await _counted(conn, query, with_facets)
    if hits is None:  # more hits than the bound: the page is walked
        hits = await store.search_offers(conn, query)
    # Read by a statement of its own: an offer moved to draft or withdrawn since the search found it
    # is read in its new state (the network sees its own drafts), and is not shown.
    offers = [o for o in await store.get_offers(conn, [h["id"] for h in hits]) if o["status"] == "published"]
    rank = {h["id"]: h["rank"] for h in hits}
    answer = {
        "items": [(public_offer_state(o) if public else store.offer_state(o)) | {"rank": round(rank[o["id"]], 6)}
                  for o in offers],
        "page_size": query.page_size,
        "next_cursor": encode_cursor(hits[-1]["rank"], hits[-1]["id"]) if len(hits) == query.page_size else None,
        "total": min(total, store.TOTAL_BOUND),
        "total_exceeds": total > store.TOTAL_BOUND,  # then: "more than 1000"
    }
    if with_facets:
        answer["facets"] = facets
        # beyond the bound the counts are those of the first hits counted (or a sample of them), as
        # the total is then "more than": a page says so rather than show them as every hit's
        answer["facets_complete"] = total <= store.TOTAL_BOUND
    return answer


async def _counted(conn: asyncpg.Connection, query: store.OfferQuery,
                   with_facets: bool) -> tuple[dict | None, int, list[asyncpg.Record] | None]:
    """The facet counts (when asked for), the total up to the bound and one more, and the page
    where there are at most the bound of hits (the count's own read gives it)."""
    if with_facets:  # one pass over the hits counts both: every offer has exactly one format
        facets, page = await store.facets_and_page(conn, query, store.TOTAL_BOUND + 1)
        return facets, sum(facets["format"].values()), page
    return None, *await store.count_and_page(conn, query)


def public_offer_state(row: asyncpg.Record) -> dict:
    """What the public sees of an offer: no sharing internals, no import bookkeeping."""
    state = store.offer_state(row)
    for internal in ("own_visibility", "visibility", "version", "tenant"):
        state.pop(internal)
    return state


async def public_offer(conn: asyncpg.Connection, offer_id: uuid.UUID) -> dict:
    row = await store.get_offer(conn, offer_id)
    if row is None or row["status"] != "published":
        raise NotFound(f"offer {offer_id}")
    return public_offer_state(row)


async def public_providers(conn: asyncpg.Connection) -> dict:
    """The network's provider directory: the providers of the published offers it shows (its own and
    those shared into it by other networks), and how many of their offers it shows."""
    rows = await store.public_providers(conn)
    return {"items": [{"id": str(r["id"]), "name": r["name"], "emails": list(r["emails"]), "address": r["address"],
                       "azav": r["azav"], "published_offers": r["published_offers"]} for r in rows]}
