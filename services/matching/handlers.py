"""Matching use cases: demands (open, change, close, expire), the offer and provider read models, the
ranking of a demand's feasible offers, and its matches (found, kept, retracted).

Concurrency. A demand opening or changing takes its network's matching lock exclusively; an offer
event takes the lock of every network it visits in shared mode (in name order). So a demand and an
offer handled at the same time never miss each other: whichever commits second sees the first. Offer
events do not wait for each other; they serialise per demand on the demand's row (FOR UPDATE, in id
order), which also keeps a demand's matches within their bounds (at most ten; a provider may hold
several, MatchFound goes out for its first only)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import numpy as np

from contracts import (
    DEMAND_CLOSED,
    DEMAND_OPENED,
    DEMANDS_TOPIC,
    MATCH_FOUND,
    MATCH_RESTORED,
    MATCH_RETRACTED,
    MATCHES_TOPIC,
    OFFER_PUBLISHED,
)
from runtime.db import set_tenant
from runtime.errors import NotFound
from runtime.events import Event
from runtime.outbox import add_many_to_outbox, add_to_outbox
from services.matching import clusters, geo, relevance, store
from services.matching.domain import DemandIn, Feasibility, check
from services.matching.index import OfferIndex, from_bytes, offer_index, to_bytes
from services.matching.kept_demands import demand_vectors

log = logging.getLogger(__name__)

SOURCE = "matching"
# Ranking runs in two steps at scale: every feasible offer is scored by meaning (one matrix product
# over the in-process index), the best STAGE_TWO of them by the full relevance (words, skills,
# preferences), which needs their records. Offers beyond that are listed by meaning alone.
STAGE_TWO = 150
# Above SHORTLIST feasible offers the meaning step itself runs in two: every offer on the index's
# 8-bit codes, then the best SHORTLIST on their exact vectors (the codes' error, about 0.003 in
# cosine, cannot move an offer from beyond the 2,000th place into the best 150).
SHORTLIST = 2000
# A demand whose last full ranking had fewer feasible offers than this is ranked in full again when an
# offer reaching it changes, rather than judged pair by pair against its kept expanded vector: that
# vector came from the offers it had then (a demand posted while its offers were still arriving), and
# a full ranking of so few costs little more than one pair (the feasible set, at most STAGE_TWO records).
RANK_IN_FULL_BELOW = STAGE_TWO
FEEDBACK_POOL = 256  # the nearest offers by the codes among which expand_query finds its neighbours
KEPT_RANKING = 100  # the best offers of a demand's full ranking kept in order for browsing (five pages)
DEEPEST = 2000  # a deeper page is ordered by the first step alone


class Refused(Exception):
    """A change the caller may not make (answered 403)."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


# ---- vectors -----------------------------------------------------------------------------------

class PreparedVectors:
    """Offers' vectors encoded ahead of their events, by the digest of their text. Kept, not taken
    away, when an event asks: offers of one text in a batch (a provider's course at several places)
    are one encoding. Bounded: the oldest are dropped (4,096 vectors, 6 MiB)."""

    def __init__(self, bound: int = 4096) -> None:
        self._vectors: dict[str, np.ndarray] = {}
        self._bound = bound

    def __contains__(self, digest: str) -> bool:
        return digest in self._vectors

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        self._vectors.update(vectors)
        for oldest in list(self._vectors)[:max(0, len(self._vectors) - self._bound)]:
            del self._vectors[oldest]

    def get(self, digest: str) -> np.ndarray | None:
        return self._vectors.get(digest)


_prepared = PreparedVectors()


def _encode(text: str, kind: str) -> np.ndarray:
    vector = relevance.load_encoder().encode([text], kind)[0]
    return from_bytes(to_bytes(vector))  # as stored: every replica ranks with the same numbers


async def prepare_offers(events: list[Event]) -> None:
    """Encode the texts of a polled batch's new offers together, before their events are handled:
    a batch of eight took 15 ms an offer on one core against 23 one at a time (``e5.TorchE5.encode``),
    which is what matching's backlog after an import, or under load, drains at. ``offer_changed``
    finds each vector by its text's digest. Only offers published (not changed): an update's text is
    mostly the one its offer has a vector for already."""
    texts: dict[str, str] = {}
    for event in events:
        if event.type != OFFER_PUBLISHED:
            continue
        try:
            text = relevance.offer_text(event.data)
        except (KeyError, TypeError, AttributeError):
            continue  # not an offer as the schema says: its event goes to the dead-letter topic
        if (digest := _text_hash(text)) not in _prepared:
            texts.setdefault(digest, text)
    if len(texts) < 2:
        return  # one text: encoded when its event is handled, as ever
    vectors = await asyncio.to_thread(relevance.load_encoder().encode, list(texts.values()), "passage")
    _prepared.put({digest: from_bytes(to_bytes(v)) for digest, v in zip(texts, vectors, strict=True)})


async def encode_demand(body: dict[str, Any]) -> np.ndarray:
    """The demand's vector, computed off the event loop (the encoder takes tens of milliseconds)."""
    return await asyncio.to_thread(_encode, relevance.demand_text(body), "query")


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- views --------------------------------------------------------------------------------------

def employer_view(demand: dict[str, Any]) -> dict[str, Any]:
    """What a provider sees of the employer: the contact only where the employer agreed to share it."""
    employer = demand["employer"]
    return {"name": employer["name"], "city": employer.get("city"), "zip": employer.get("zip"),
            "employees": employer.get("employees"),
            "contact": employer.get("contact") if employer.get("share_contact") else None}


def provider_demand_view(demand: dict[str, Any]) -> dict[str, Any]:
    return {k: demand.get(k) for k in ("id", "tenant", "title", "description", "skills", "participants",
                                       "start_from", "start_to", "formats", "schedules", "max_distance_km",
                                       "funding_required", "status")}


def _offer_brief(offer: dict[str, Any]) -> dict[str, Any]:
    return {"id": offer["id"], "tenant": offer["tenant"], "provider_id": offer["provider_id"],
            "external_id": offer.get("external_id"), "title": offer["title"]}


def _match_state(match: asyncpg.Record, demand: dict[str, Any], offer: dict[str, Any], status: str) -> dict:
    return {
        "id": str(match["id"]), "tenant": demand["tenant"], "score": match["score"], "reasons": match["reasons"],
        "status": status, "created_at": match["created_at"].isoformat(),
        "demand": {
            "id": demand["id"], "title": demand["title"], "description": demand["description"],
            "skills": demand["skills"], "participants": demand["participants"],
            "start_from": demand["start_from"], "start_to": demand["start_to"], "owner": demand.get("owner"),
            "employer": {k: v for k, v in employer_view(demand).items() if k != "zip"},
        },
        "offer": _offer_brief(offer),
    }


# ---- ranking ------------------------------------------------------------------------------------

async def rank_demand(conn: asyncpg.Connection, demand: dict[str, Any], demand_vector: np.ndarray, *,
                      depth: int = STAGE_TWO, include: set[str] | frozenset[str] = frozenset(),
                      override: dict[str, np.ndarray] | None = None, changed: dict[str, Any] | None = None,
                      tail: int = 0) -> tuple[list[relevance.Ranked], dict[str, dict], int, np.ndarray]:
    """The demand's feasible offers, best first: the top ``depth`` by meaning (and ``include``) fully
    ranked, then the rest in that order as far as the ``tail``-th place (a page deeper than ``depth``).
    ``demand_vector`` is the demand's own vector; the ranking uses it expanded over the feasible
    offers' vectors (``relevance.expand_query``). ``override`` gives vectors the index does not hold
    yet, ``changed`` an offer this transaction has just written (its facts, ditto). Answers the
    ranking, the records of the fully ranked offers (read through row-level security: an offer the
    demand's network may not see is not ranked), the number of feasible offers and the expanded
    vector (as stored: every replica judges with the same numbers)."""
    plain = np.asarray(demand_vector, dtype=np.float32).reshape(-1)
    index = offer_index()
    await index.sync(conn)
    feasible = index.feasible(demand, changed)
    if not len(feasible):
        return [], {}, 0, plain
    rows = feasible.rows
    positions = {offer_id: at for offer_id in set(include) | set(override or {})
                 if (at := feasible.position(offer_id)) is not None}
    exact = {positions[offer_id]: np.asarray(vector, dtype=np.float32)
             for offer_id, vector in (override or {}).items() if offer_id in positions}
    forced = np.array(sorted(positions.values()), dtype=np.int64)  # the included and the overridden
    keys = feasible.keys
    expanded, first = meaning_step(index, rows, plain, exact, forced, keys)
    head = best_by_meaning(first, depth, keys).tolist()
    in_head = set(head)
    head += [at for offer_id, at in sorted(positions.items()) if offer_id in include and at not in in_head]
    states = await store.offer_states(conn, [feasible.offer_id(i) for i in head])
    known = np.array([i for i in head if feasible.offer_id(i) in states], dtype=np.int64)
    candidates = []
    for i, vector in zip(known.tolist(), _exact_vectors(index, rows, known, exact), strict=True):
        session, km = feasible.session(i)
        candidates.append((states[feasible.offer_id(i)], Feasibility((), session, km), vector))
    ranked = relevance.rank(demand, candidates, expanded, plain_vector=plain)
    if tail > len(ranked) and len(feasible) > len(head):  # the long tail, by the first step alone (rarely asked)
        ranked_ids = {r.offer_id for r in ranked}
        nearest = best_by_meaning(first, min(len(feasible), tail + len(ranked_ids)), keys)
        rest = [(i, feasible.offer_id(i)) for i in nearest.tolist()]
        rest = [(i, offer_id) for i, offer_id in rest if offer_id not in ranked_ids][: tail - len(ranked)]
        visible = await store.visible_offers(conn, [offer_id for _, offer_id in rest])  # as the head: the policy's
        ranked += [relevance.Ranked(offer_id, "", round(max(float(first[i]), 0.0), 4), {})
                   for i, offer_id in rest if offer_id in visible]
    return ranked, states, len(feasible), expanded


def meaning_step(index: OfferIndex, rows: np.ndarray, plain: np.ndarray, exact: dict[int, np.ndarray],
                 forced: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ranking step over a demand's feasible offers (their ``rows`` in the index, ``keys``
    as ``FeasibleSet.keys``): the demand's expanded vector, and each offer's cosine with it, exact for
    the SHORTLIST best and for ``forced`` (``exact``: vectors the index does not hold yet, by
    position)."""
    if len(rows) <= SHORTLIST:
        matrix = _exact_vectors(index, rows, np.arange(len(rows)), exact)
        expanded = _expanded(plain, matrix)
        return expanded, matrix @ expanded
    # on the codes: the neighbours that expand the demand, then the shortlist scored exactly
    codes = index.codes(rows)
    pool = np.union1d(_best(codes.scores(plain), FEEDBACK_POOL, keys), forced)
    expanded = _expanded(plain, _exact_vectors(index, rows, pool, exact))
    first = codes.scores(expanded)
    shortlist = np.union1d(_best(first, SHORTLIST, keys), forced)
    first[shortlist] = _exact_vectors(index, rows, shortlist, exact) @ expanded
    return expanded, first


def _best(scores: np.ndarray, count: int, keys: np.ndarray) -> np.ndarray:
    """The positions of the ``count`` highest scores (in no order); of equal scores at the edge, those
    of the lowest ``keys``: the same offers on every replica, whatever order its index holds them in
    (equal texts have equal vectors)."""
    if count >= len(scores):
        return np.arange(len(scores))
    best = np.argpartition(-scores, count - 1)[:count]
    edge = scores[best].min()
    tied = np.flatnonzero(scores == edge)
    if len(tied) == 1:
        return best
    above = best[scores[best] > edge]
    return np.concatenate([above, tied[np.argsort(keys[tied], kind="stable")[: count - len(above)]]])


def best_by_meaning(scores: np.ndarray, count: int, keys: np.ndarray) -> np.ndarray:
    """The positions of the ``count`` highest scores, the highest first; equal scores by key (as
    ``_best``)."""
    best = _best(scores, count, keys)
    return best[np.lexsort((keys[best], -scores[best]))]


def _exact_vectors(index: OfferIndex, rows: np.ndarray, positions: np.ndarray,
                   exact: dict[int, np.ndarray]) -> np.ndarray:
    """The float32 vectors at ``positions`` of a demand's feasible offers; ``exact`` replaces some
    (an offer's new vector, before the index holds it)."""
    vectors = index.vectors_at(rows[positions])
    for n, position in enumerate(positions.tolist()):
        if position in exact:
            vectors[n] = exact[position]
    return vectors


def _expanded(plain: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The demand's ranking vector (``relevance.expand_query`` over the candidates' exact vectors), as
    stored: every replica judges with the same numbers."""
    return from_bytes(to_bytes(relevance.expand_query(plain, candidates)))


async def kept_page(conn: asyncpg.Connection, row: asyncpg.Record, first: int, count: int
                    ) -> tuple[list[relevance.Ranked], dict[str, dict], int] | None:
    """``count`` offers from place ``first`` of an open demand's kept ranking (its last full ranking's
    order; see ``rematch``), each pair scored again on the stored expanded vector as that ranking scored
    it. None where it cannot serve the page (none kept, too short, or an offer in it changed meanwhile):
    rank in full then."""
    demand = row["state"]
    if demand["status"] != "open" or row["ranking_vector"] is None:
        return None
    ranking = await store.kept_ranking(conn, demand["id"])
    if ranking is None:
        return None
    kept, total = ranking["offers"], ranking["total"]
    if first + count > len(kept) and len(kept) < total:
        return None
    ids = [str(i) for i in kept[first:first + count]]
    states = await store.offer_states(conn, ids)
    index = offer_index()
    await index.sync(conn)
    matrix, known = index.vectors(ids)
    candidates = []
    for i, offer_id in enumerate(ids):
        state = states.get(offer_id)
        feasibility = check(state, demand) if state is not None else None
        if feasibility is None or not feasibility.ok or not known[i]:
            return None
        candidates.append((state, feasibility, matrix[i]))
    ranked = relevance.rank(demand, candidates, from_bytes(row["ranking_vector"]),
                            plain_vector=from_bytes(row["vector"]))
    place = {offer_id: n for n, offer_id in enumerate(ids)}
    ranked.sort(key=lambda r: place[r.offer_id])
    return ranked, states, total


# ---- matches ------------------------------------------------------------------------------------

async def _announce(conn: asyncpg.Connection, event_type: str, state: dict) -> None:
    await add_to_outbox(conn, MATCHES_TOPIC, Event(event_type, SOURCE, state["tenant"], state["demand"]["id"], state))


async def _in_tenant(conn: asyncpg.Connection, tenant: str, back: str, work) -> None:
    await set_tenant(conn, tenant)
    try:
        await work()
    finally:
        await set_tenant(conn, back)


async def _show_to_provider(conn: asyncpg.Connection, demand: dict, match: asyncpg.Record, offer: dict) -> None:
    await _in_tenant(conn, offer["tenant"], demand["tenant"], lambda: store.put_provider_match(
        conn, match, offer, provider_demand_view(demand), employer_view(demand)))


async def _hide_from_provider(conn: asyncpg.Connection, demand: dict, match: asyncpg.Record) -> None:
    tenant = match["offer_tenant"] or demand["tenant"]
    await _in_tenant(conn, tenant, demand["tenant"], lambda: store.drop_provider_match(conn, match["id"]))


async def _offer_of(conn: asyncpg.Connection, match: asyncpg.Record, known: dict | None) -> dict:
    if known is not None:
        return known
    return _offer_of_match(match, await store.offer_states(conn, [str(match["offer_id"])]))


def _offer_of_match(match: asyncpg.Record, states: dict[str, dict]) -> dict:
    """The matched offer's state among ``states``, else what the match row knows of it (an offer no
    longer visible to the demand's network)."""
    offer = states.get(str(match["offer_id"]))
    if offer is None:
        offer = {"id": str(match["offer_id"]), "tenant": match["offer_tenant"] or "",
                 "provider_id": str(match["provider_id"]), "external_id": None,
                 "title": (match["reasons"] or {}).get("offer_title") or "Angebot"}
    return offer


async def _retract(conn: asyncpg.Connection, demand: dict, match: asyncpg.Record, offer: dict | None = None) -> None:
    retracted = await store.update_match(conn, match["id"], "retracted")
    await _hide_from_provider(conn, demand, match)
    if match["announced"]:
        offer = await _offer_of(conn, match, offer)
        await _announce(conn, MATCH_RETRACTED, _match_state(retracted, demand, offer, "retracted"))


async def _keep(conn: asyncpg.Connection, demand: dict, match: asyncpg.Record, ranked: relevance.Ranked,
                offer: dict) -> asyncpg.Record:
    """A match that still holds: new score and reasons, quietly (it was announced once)."""
    kept = await store.update_match(conn, match["id"], "active", ranked.score, ranked.reasons)
    await _show_to_provider(conn, demand, kept, offer)
    return kept


def _heard(existing: list[asyncpg.Record]) -> set[str]:
    """The providers told of the demand already (a MatchFound for one of their offers)."""
    return {str(m["provider_id"]) for m in existing if m["announced"]}


async def _add(conn: asyncpg.Connection, demand: dict, fresh: list[relevance.Ranked], states: dict[str, dict],
               existing: list[asyncpg.Record], heard: set[str]) -> None:
    """New matches of one demand, best first, in a few statements whatever their number. MatchFound
    unless the pair was announced before, or the provider already heard of this demand through another
    of its offers (``heard``, kept up to date here). ``existing`` holds every match the demand has
    had (read under its row's lock), so no insert here meets an earlier pair."""
    adding: list[tuple[str, dict, float, dict, bool]] = []
    for ranked in fresh:
        offer = states[ranked.offer_id]
        before = next((m for m in existing if str(m["offer_id"]) == ranked.offer_id), None)
        if before is not None:  # matched once, then retracted: back
            kept = await _keep(conn, demand, before, ranked, offer)
            if before["announced"]:
                # Not announced again (MatchFound is once per pair), but said: notifications then
                # sends the mail its retraction cancelled before it went out (the SMTP server
                # refusing, a digest not yet due), and never a second one. Brought back without a
                # word, as before, such a match was never mailed (15 of 594 in make chaos, 2026-12-06).
                await _announce(conn, MATCH_RESTORED, _match_state(kept, demand, offer, "active"))
            continue
        provider = str(offer["provider_id"])
        adding.append((demand["id"], offer, ranked.score, ranked.reasons, provider not in heard))
        heard.add(provider)
    if not adding:
        return
    inserted = {str(m["offer_id"]): m for m in await store.insert_matches(conn, demand["tenant"], adding)}
    await _show_and_announce(conn, demand["tenant"], [(inserted[offer["id"]], demand, offer)
                                                      for _, offer, *_ in adding if offer["id"] in inserted])


async def _show_and_announce(conn: asyncpg.Connection, tenant: str, added: list[tuple[asyncpg.Record, dict, dict]]
                             ) -> None:
    """New matches (match, demand, offer) of the network's demands: shown to the providers, one statement
    per offer network, and MatchFound for those announced, in one outbox batch."""
    for offer_tenant in sorted({offer["tenant"] for _, _, offer in added}):
        shown = [(m, offer, provider_demand_view(d), employer_view(d)) for m, d, offer in added
                 if offer["tenant"] == offer_tenant]
        await _in_tenant(conn, offer_tenant, tenant, lambda rows=shown: store.put_provider_matches(conn, rows))
    found = [Event(MATCH_FOUND, SOURCE, tenant, d["id"], _match_state(m, d, offer, "active"))
             for m, d, offer in added if m["announced"]]
    if found:
        await add_many_to_outbox(conn, MATCHES_TOPIC, found)


def _holds(ranked: relevance.Ranked | None) -> bool:
    """A match keeps its place while it passes the threshold and the floor and no better pair takes it
    (``_weakest``); the margin below the demand's best decides only which new pairs become matches."""
    return ranked is not None and bool(ranked.reasons) and bool(relevance.announce([ranked]))


def _weakest(active: list[asyncpg.Record]) -> asyncpg.Record | None:
    """Once a demand has its bound of matches, the one a better new pair takes the place of."""
    if len(active) < relevance.MAX_MATCHES_PER_DEMAND:
        return None
    return max(active, key=lambda m: (-m["score"], str(m["offer_id"])))


def _outranks(ranked: relevance.Ranked, match: asyncpg.Record) -> bool:
    """Whether a new pair is better than a match: a higher score (on a tie the match stays, so equal
    offers arriving one after another do not take each other's places)."""
    return ranked.score > match["score"]


async def rematch(conn: asyncpg.Connection, demand: dict, demand_vector: np.ndarray | None,
                  override: dict[str, np.ndarray] | None = None, changed: dict[str, Any] | None = None, *,
                  new: bool = False) -> None:
    """Bring all of a demand's matches in line (caller holds the demand's row): its best pairs, at most
    MAX_MATCHES_PER_DEMAND. A match stays while it holds and no better pair takes its place; the rest
    are retracted; new pairs ``relevance.announce`` lets through take the free places or those of
    weaker matches, several of one provider too (MatchFound only for a provider's first). Keeps the
    demand's expanded vector and best score for judging single offers later."""
    existing = [] if new else await store.matches_of_demand(conn, demand["id"])
    active = {str(m["offer_id"]): m for m in existing if m["status"] == "active"}
    if demand["status"] != "open" or demand_vector is None:
        for m in active.values():
            await _retract(conn, demand, m)
        return
    ranked, states, total, expanded = await rank_demand(conn, demand, demand_vector, include=set(active),
                                                        override=override, changed=changed)
    best = max((r.score for r in ranked if r.reasons), default=None)
    # With fewer feasible offers than the feedback step takes, each new one moves the expanded vector:
    # none is kept, so a changed offer brings the whole (small) ranking back here.
    thin = total < relevance.WEIGHTS.feedback_k
    await store.set_ranking(conn, demand, None if thin else to_bytes(expanded), best,
                            None if thin else [r.offer_id for r in ranked[:KEPT_RANKING]], total)
    by_id = {r.offer_id: r for r in ranked}
    staying = [by_id[offer_id] for offer_id in active if _holds(by_id.get(offer_id))]
    fresh = relevance.announce([r for r in ranked if r.reasons and r.offer_id not in active], best=best)
    # best first; on a tie the match that stands before the newcomer (see _outranks)
    chosen = {r.offer_id for r in sorted(staying + fresh, key=lambda r: (-r.score, r.offer_id not in active,
                                                                         r.offer_id))
              [:relevance.MAX_MATCHES_PER_DEMAND]}
    for offer_id, m in sorted(active.items()):
        if offer_id in chosen:
            await _keep(conn, demand, m, by_id[offer_id], states[offer_id])
        else:
            await _retract(conn, demand, m, states.get(offer_id))
    await _add(conn, demand, [r for r in fresh if r.offer_id in chosen], states, existing, _heard(existing))


async def _lock_network(conn: asyncpg.Connection, tenant: str, *, shared: bool) -> None:
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {fn}(hashtext($1))", f"matching:{tenant}")


# ---- demands ------------------------------------------------------------------------------------

def _owner_for(body: DemandIn, actor_subject: str, actor_firm: str | None, whole_network: bool) -> str:
    if body.firm and not whole_network and body.firm != actor_firm:
        raise Refused("An employer records demand only for its own firm.")
    return body.firm or actor_firm or actor_subject


def _row_extras(demand: dict, vector: np.ndarray) -> tuple[bytes, str, str | None]:
    """What a demand's row keeps beside its state: its vector, skill group and region."""
    employer = demand["employer"]
    return (to_bytes(vector), clusters.of_vector(vector, "query"),
            geo.region(employer.get("zip"), employer["lat"], employer["lon"]))


async def _publish_and_match(conn: asyncpg.Connection, demand: dict, vector: np.ndarray, *, new: bool) -> None:
    """Its keys for reverse matching, its event, and its matches, in the caller's transaction (``new``:
    a demand inserted by it, which has neither keys nor matches to read or replace yet)."""
    await store.replace_keys(conn, demand, new=new)
    await add_to_outbox(conn, DEMANDS_TOPIC, Event(DEMAND_OPENED, SOURCE, demand["tenant"], demand["id"], demand))
    await rematch(conn, demand, vector, new=new)


async def open_demand(conn: asyncpg.Connection, tenant: str, body: DemandIn, created_by: str, *,
                      firm: str | None = None, whole_network: bool = True,
                      vector: np.ndarray | None = None) -> dict:
    """A new demand, matched at once. ``firm`` is the employer's own firm (from its token); network staff
    record demand for a firm named in the body (or for nobody in particular)."""
    data = body.model_dump(mode="json", exclude={"firm"})
    if vector is None:
        vector = await encode_demand(data)
    await _lock_network(conn, tenant, shared=False)
    demand = {"id": str(uuid.uuid4()), "tenant": tenant, "status": "open", "updated_at": _now(),
              "created_at": _now(), "owner": _owner_for(body, created_by, firm, whole_network),
              "recorded_by": created_by, **data}
    await store.insert_demand(conn, demand, created_by, *_row_extras(demand, vector))
    await _publish_and_match(conn, demand, vector, new=True)
    return demand


async def change_demand(conn: asyncpg.Connection, tenant: str, row: asyncpg.Record, body: DemandIn, *,
                        whole_network: bool, vector: np.ndarray | None = None) -> dict:
    """``PUT``: the new content, re-matched at once (matches that no longer hold are retracted). The
    owner stays unless network staff name another firm. A closed demand is not reopened."""
    await _lock_network(conn, tenant, shared=False)
    row = await store.get_demand(conn, row["id"], lock=True)
    old = row["state"]
    if old["status"] != "open":
        raise Refused("Ein geschlossener Bedarf kann nicht mehr geändert werden.")
    if body.firm and not whole_network and body.firm != old.get("owner"):
        raise Refused("An employer records demand only for its own firm.")
    data = body.model_dump(mode="json", exclude={"firm"})
    if vector is None:
        vector = await encode_demand(data)
    demand = {**old, **data, "updated_at": _now(), "owner": body.firm if body.firm and whole_network
              else old.get("owner")}
    await store.update_demand(conn, demand, *_row_extras(demand, vector))
    await _publish_and_match(conn, demand, vector, new=False)
    return demand


async def close_demand(conn: asyncpg.Connection, tenant: str, demand_id: uuid.UUID | str,
                       reason: str = "closed") -> dict:
    """Closed by a person, or expired after its start window: its matches are retracted."""
    row = await store.get_demand(conn, demand_id, lock=True)
    if row is None or row["tenant_id"] != tenant:
        raise NotFound(f"demand {demand_id}")
    demand = row["state"]
    if demand["status"] == "closed":
        return demand
    demand = demand | {"status": "closed", "closed_reason": reason, "updated_at": _now()}
    await store.update_demand(conn, demand)
    await store.replace_keys(conn, demand)
    await add_to_outbox(conn, DEMANDS_TOPIC, Event(DEMAND_CLOSED, SOURCE, tenant, demand["id"], demand))
    await rematch(conn, demand, None)
    return demand


async def expire_due(pool: asyncpg.Pool, today: date | None = None) -> int:
    """Close every open demand whose start window has passed (closed_reason "expired"), network by
    network; answers how many."""
    today = today or date.today()
    expired = 0
    tenants = [r["id"] for r in await pool.fetch("SELECT id FROM known_tenants ORDER BY id")]
    for tenant in tenants:
        while True:
            async with pool.acquire() as conn, conn.transaction():
                await set_tenant(conn, tenant)
                due = await store.expired_demands(conn, today, 50)
                for r in due:
                    await close_demand(conn, tenant, r["id"], "expired")
            expired += len(due)
            if len(due) < 50:
                break
    return expired


# ---- offers -------------------------------------------------------------------------------------

def _visible_networks(offer: dict[str, Any] | None, all_tenants: list[str]) -> set[str]:
    if offer is None:
        return set()
    scope = offer["visibility"]["scope"]
    if scope == "all":
        return set(all_tenants) | {offer["tenant"]}
    if scope == "networks":
        return set(offer["visibility"].get("networks") or []) | {offer["tenant"]}
    return {offer["tenant"]}


async def offer_changed(conn: asyncpg.Connection, event: Event) -> None:
    """An offer was published, changed, made draft or withdrawn: keep its state, sessions and vector,
    then re-evaluate the open demands it can concern, found through their keys in every network that
    could see the old or can see the new version (not by visiting every demand)."""
    offer = event.data
    await set_tenant(conn, offer["tenant"])
    before = await store.get_offer(conn, offer["id"])
    text = relevance.offer_text(offer)
    digest = _text_hash(text)
    stored = await store.vector_hash(conn, offer["id"])
    if stored != digest:
        vector = _prepared.get(digest)
        if vector is None:
            vector = await asyncio.to_thread(_encode, text, "passage")
    else:
        raw = (await store.stored_vectors(conn, [offer["id"]]))[offer["id"]]
        vector = from_bytes(raw)
    if not await store.upsert_offer(conn, offer, clusters.of_offer(offer, vector)):
        return  # an older version arrived late: the newer one was evaluated already
    await store.replace_sessions(conn, offer)
    if stored != digest:
        await store.put_vector(conn, offer["id"], digest, to_bytes(vector))
    tenants = [r["id"] for r in await conn.fetch("SELECT id FROM known_tenants WHERE status = 'active'")]
    old_state = before["state"] if before else None
    for tenant in sorted(_visible_networks(old_state, tenants) | _visible_networks(offer, tenants)):
        await set_tenant(conn, tenant)
        await _lock_network(conn, tenant, shared=True)
        matched = set(await store.demands_matched_to_offer(conn, offer["id"]))
        reached = await _reached(conn, tenant, offer)
        was_reached = reached if _reach_alike(old_state, offer) else await _reached(conn, tenant, old_state)
        reached = reached - matched
        await store.forget_rankings(conn, sorted(matched | reached | was_reached))  # their kept order may not hold
        qualifying = await _qualifying(conn, reached, offer, vector)
        # the rows this change may write, locked at once in id order (as every other writer locks them)
        locked = {str(r["id"]): r for r in await store.lock_demands(conn, sorted(matched | set(qualifying)))}
        rest = await _match_many(conn, [locked[i] for i in sorted(qualifying) if i in locked], offer, vector,
                                 qualifying)
        for demand_id in sorted(matched | rest):
            await _reconsider(conn, demand_id, offer, vector)
    await set_tenant(conn, offer["tenant"])
    await store.stamp_offers(conn, [offer["id"]])  # its new facts (and vector) for every replica's index


async def _reached(conn: asyncpg.Connection, tenant: str, offer: dict | None) -> set[str]:
    """The open demands of the tenant an offer version's sessions can concern (none unless published)."""
    if offer is None or offer["status"] != "published":
        return set()
    return set(await store.demands_for_offer(conn, tenant, offer))


def _reach_alike(before: dict | None, offer: dict) -> bool:
    """Whether two versions of an offer reach the same demands (only its text or the like changed)."""
    fields = ("status", "format", "price_eur", "sessions", "visibility")
    return before is not None and all(before.get(f) == offer.get(f) for f in fields) \
        and before["funding"].get("qcg") == offer["funding"].get("qcg")


def _ranks_in_full(ranked: bool, total: int | None) -> bool:
    """Whether an offer change reaching the demand ranks it in full (``ranked``: it has a kept expanded
    vector; ``total``: the feasible offers at its last full ranking) rather than judging the one pair."""
    return not ranked or (total is not None and total < RANK_IN_FULL_BELOW)


def judge_pair(row: asyncpg.Record, offer: dict, vector: np.ndarray) -> relevance.Ranked | None:
    """One offer against a demand's row as the demand's last full ranking would judge it: its stored
    expanded vector for the score, its own vector for the floor. None when the offer is not feasible;
    call only where ``row["ranking_vector"]`` is set (else rank the demand in full: ``rematch``)."""
    demand = row["state"]
    feasibility = check(offer, demand)
    if not feasibility.ok:
        return None
    return relevance.rank(demand, [(offer, feasibility, vector)], from_bytes(row["ranking_vector"]),
                          plain_vector=from_bytes(row["vector"]))[0]


@dataclass(frozen=True)
class Judged:
    """A pair judged on a demand's ranking vector (as ``judge_pair`` answers), with that vector."""

    ranking_vector: bytes
    ranked: relevance.Ranked


async def _qualifying(conn: asyncpg.Connection, demand_ids: set[str], offer: dict, vector: np.ndarray
                      ) -> dict[str, Judged | None]:
    """Of the open demands an offer reaches, those it may become a match of (as _reconsider judges):
    first by meaning alone for all of them at once (``relevance.may_announce``, one matrix product over
    their stored vectors), then each pair that may pass in full; read without locks, only these are
    then taken. Answers each such demand's judgement (None where a whole new ranking judges it,
    ``_ranks_in_full``), which ``_match_many`` reuses while the demand's ranking vector is the one
    judged with. A demand's content cannot change meanwhile (changing it takes the network's lock
    exclusively)."""
    out: dict[str, Judged | None] = {}
    if not demand_ids:
        return out
    kept = demand_vectors()
    reached, stamps = await kept.reached(conn, sorted(demand_ids))
    judged = []
    for row in reached:
        if not row.encoded:
            continue
        if _ranks_in_full(row.ranked, row.ranked_total):  # judged by a whole new ranking there
            out[row.id] = None
        else:
            judged.append(row)
    if not judged:
        return out
    ids, own, expanded = await kept.vectors(conn, stamps, [r.id for r in judged])
    offer_vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    best_of = {r.id: r.best_score for r in judged}
    best = np.array([np.nan if best_of[i] is None else best_of[i] for i in ids], dtype=np.float64)
    maybe = [ids[i] for i in np.flatnonzero(relevance.may_announce(own @ offer_vector, expanded @ offer_vector, best))]
    for row in await store.open_demand_states(conn, maybe) if maybe else []:
        ranked = judge_pair(row, offer, vector)
        if ranked is not None and relevance.announce([ranked], best=row["best_score"]):
            out[row["id"]] = Judged(bytes(row["ranking_vector"]), ranked)
    return out


async def _match_many(conn: asyncpg.Connection, rows: list[asyncpg.Record], offer: dict, vector: np.ndarray,
                      judged: dict[str, Judged | None]) -> set[str]:
    """One changed offer as a new match of many open demands (locked rows), as ``_reconsider`` would
    add it to each (where the demand has its bound of matches, in the place of its weakest one, which
    is retracted first), written in a few statements instead of some fifteen round trips per demand:
    an offer that concerns hundreds of demands is one batch. Answers the demands this path does not
    decide (ranked in full there, or the pair was matched before): ``_reconsider`` takes those one by
    one. ``judged``: the pairs ``_qualifying`` judged, reused where the demand's ranking vector is
    unchanged."""
    elsewhere: set[str] = set()
    if not rows:
        return elsewhere
    existing = await store.matches_of_demands(conn, [str(r["id"]) for r in rows])
    chosen: list[tuple[dict, relevance.Ranked, bool]] = []  # (demand, ranked, announced)
    displaced: list[tuple[dict, asyncpg.Record]] = []  # (demand, its weakest match the new pair outranks)
    for row in rows:
        demand_id, demand = str(row["id"]), row["state"]
        if demand["status"] != "open" or row["vector"] is None:
            continue
        known = existing.get(demand_id, [])
        if _ranks_in_full(row["ranking_vector"] is not None, row["ranked_total"]) \
                or any(str(m["offer_id"]) == offer["id"] for m in known):
            elsewhere.add(demand_id)
            continue
        before = judged.get(demand_id)
        fresh = before is not None and before.ranking_vector == bytes(row["ranking_vector"])
        ranked = before.ranked if fresh else judge_pair(row, offer, vector)
        if ranked is None or not relevance.announce([ranked], best=row["best_score"]):
            continue
        weakest = _weakest([m for m in known if m["status"] == "active"])
        if weakest is not None:
            if not _outranks(ranked, weakest):
                continue
            displaced.append((demand, weakest))  # a better pair takes its place
        chosen.append((demand, ranked, str(offer["provider_id"]) not in _heard(known)))
    if not chosen:
        return elsewhere
    await _retract_many(conn, displaced)
    await store.raise_best_scores(conn, [(d["id"], r.score) for d, r, _ in chosen])
    tenant, demands = chosen[0][0]["tenant"], {d["id"]: d for d, _, _ in chosen}
    matches = await store.insert_matches(
        conn, tenant, [(d["id"], offer, r.score, r.reasons, announced) for d, r, announced in chosen])
    await _show_and_announce(conn, tenant, [(m, demands[str(m["demand_id"])], offer) for m in matches])
    return elsewhere


async def _retract_many(conn: asyncpg.Connection, retracting: list[tuple[dict, asyncpg.Record]]) -> None:
    """``_retract`` for matches of many demands of one network (each demand once, its row locked): the
    matches in one statement, the providers' views by the offers' networks, the events in one batch."""
    if not retracting:
        return
    demands = {d["id"]: d for d, _ in retracting}
    tenant = retracting[0][0]["tenant"]
    retracted = await store.update_matches(conn, [m["id"] for _, m in retracting], "retracted")
    by_offer_tenant: dict[str, list[uuid.UUID]] = {}
    for _, match in retracting:
        by_offer_tenant.setdefault(match["offer_tenant"] or tenant, []).append(match["id"])
    for offer_tenant, match_ids in sorted(by_offer_tenant.items()):
        await _in_tenant(conn, offer_tenant, tenant, lambda ids=match_ids: store.drop_provider_matches(conn, ids))
    announced = [m for m in retracted if m["announced"]]
    if not announced:
        return
    states = await store.offer_states(conn, sorted({str(m["offer_id"]) for m in announced}))
    await add_many_to_outbox(conn, MATCHES_TOPIC, [
        Event(MATCH_RETRACTED, SOURCE, tenant, str(m["demand_id"]),
              _match_state(m, demands[str(m["demand_id"])], _offer_of_match(m, states), "retracted"))
        for m in announced])


async def _reconsider(conn: asyncpg.Connection, demand_id: str, offer: dict, vector: np.ndarray) -> None:
    """One demand against one changed offer (the pair's score depends on that pair only)."""
    row = await store.get_demand(conn, demand_id, lock=True)
    if row is None or row["state"]["status"] != "open":
        return
    demand = row["state"]
    demand_vector = from_bytes(row["vector"]) if row["vector"] is not None else None
    if demand_vector is None:
        return
    # few feasible offers (or an older row): rank them all again
    if _ranks_in_full(row["ranking_vector"] is not None, row["ranked_total"]):
        await rematch(conn, demand, demand_vector, override={offer["id"]: vector}, changed=offer)
        return
    existing = await store.matches_of_demand(conn, demand_id)
    active = [m for m in existing if m["status"] == "active"]
    current = next((m for m in active if str(m["offer_id"]) == offer["id"]), None)
    ranked = judge_pair(row, offer, vector)
    if current is not None:
        if _holds(ranked):
            await _keep(conn, demand, current, ranked, offer)
        else:  # retracted; its place may go to the next best offer
            await _retract(conn, demand, current, offer)
            await rematch(conn, demand, demand_vector, override={offer["id"]: vector}, changed=offer)
        return
    best = row["best_score"]
    if ranked is None or not relevance.announce([ranked], best=best):
        return
    weakest = _weakest(active)
    if weakest is not None:
        if not _outranks(ranked, weakest):
            return
        await _retract(conn, demand, weakest)  # a better pair takes its place
    if best is None or ranked.score > best:
        await store.raise_best_scores(conn, [(demand_id, ranked.score)])
    # MatchFound unless its provider heard
    await _add(conn, demand, [ranked], {offer["id"]: offer}, existing, _heard(existing))


# ---- providers ----------------------------------------------------------------------------------

async def provider_changed(conn: asyncpg.Connection, event: Event) -> None:
    """Who acts for which provider (catalog's members), for the provider's view of matched demands."""
    await set_tenant(conn, event.data["tenant"])
    await store.upsert_provider(conn, event.data)
