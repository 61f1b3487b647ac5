"""The catalog's SQL. Every function runs inside the caller's tenant transaction, so row-level
security already limits what it sees; the explicit filters say the same thing twice, on purpose."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from runtime.ids import new_id
from services.catalog.domain import Acting, OfferIn, ProviderIn

# ---- acting ----------------------------------------------------------------------------------


async def act_as_member(conn: asyncpg.Connection, tenant: str, subject: str, claimed: frozenset[str],
                        username: str) -> Acting:
    """Act for the providers the token claims and those the subject is a member of, told to row-level
    security as ``set_acting`` does: one round trip where reading the memberships and then setting
    took two, on every request of a provider or an employer."""
    row = await conn.fetchrow(
        "SELECT ids, set_config('app.acting_providers', array_to_string(ids, ','), true) FROM (SELECT ARRAY("
        "SELECT DISTINCT p FROM unnest($2::text[] || ARRAY(SELECT provider_id::text FROM provider_members"
        " WHERE subject = $1)) AS p ORDER BY p) AS ids) t", subject, sorted(claimed))
    return Acting(tenant, subject, frozenset(row["ids"]), username)


async def set_acting(conn: asyncpg.Connection, acting: Acting) -> None:
    """Tell row-level security whom this transaction acts for (read by acting_for_provider())."""
    await conn.execute("SELECT set_config('app.acting_providers', $1, true)", acting.setting)


# ---- providers -------------------------------------------------------------------------------

_PROVIDER_COLUMNS = (
    "p.*, coalesce((SELECT array_agg(m.subject ORDER BY m.subject) FROM provider_members m"
    " WHERE m.provider_id = p.id), '{}') AS members"
)


def provider_state(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "tenant": row["tenant_id"], "external_id": row["external_id"],
        "name": row["name"], "emails": list(row["emails"]), "address": row["address"], "azav": row["azav"],
        "members": list(row["members"]), "updated_at": row["updated_at"].isoformat(), "version": row["version"],
    }


def _provider_values(body: ProviderIn) -> tuple:
    return (
        body.external_id, body.name, [str(e) for e in body.emails],
        body.address.model_dump(mode="json") if body.address else None,
        body.azav.model_dump(mode="json") if body.azav else None,
    )


async def insert_provider(conn: asyncpg.Connection, tenant: str, body: ProviderIn) -> uuid.UUID:
    return await conn.fetchval(
        "INSERT INTO providers (id, tenant_id, external_id, name, emails, address, azav)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        new_id(), tenant, *_provider_values(body),
    )


async def update_provider(conn: asyncpg.Connection, tenant: str, provider_id: uuid.UUID, body: ProviderIn) -> bool:
    return await conn.fetchval(
        "UPDATE providers SET external_id = $3, name = $4, emails = $5, address = $6, azav = $7,"
        " version = version + 1, updated_at = now() WHERE id = $1 AND tenant_id = $2 RETURNING true",
        provider_id, tenant, *_provider_values(body),
    ) or False


async def touch_provider(conn: asyncpg.Connection, provider_id: uuid.UUID) -> None:
    await conn.execute("UPDATE providers SET version = version + 1, updated_at = now() WHERE id = $1", provider_id)


async def get_provider(conn: asyncpg.Connection, provider_id: uuid.UUID, *, hold: bool = False
                       ) -> asyncpg.Record | None:
    """The provider; ``hold``: in share mode to commit, so that a change of its certification waits
    for an offer written under the one read here (or the write reads the changed one)."""
    return await conn.fetchrow(f"SELECT {_PROVIDER_COLUMNS} FROM providers p WHERE p.id = $1"
                               + (" FOR SHARE OF p" if hold else ""), provider_id)


IMPORT_LOCK = "SELECT {}(hashtext('catalog-import'), hashtext($1))"  # one import of a provider at a time


async def try_hold_imports(conn: asyncpg.Connection, provider_id: uuid.UUID) -> bool:
    """The provider's import lock if no import of it runs, to commit; False if one does."""
    return await conn.fetchval(IMPORT_LOCK.format("pg_try_advisory_xact_lock"), str(provider_id))


async def list_providers(conn: asyncpg.Connection, only: frozenset[str] | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_PROVIDER_COLUMNS} FROM providers p WHERE $1::uuid[] IS NULL OR p.id = ANY($1::uuid[])"
        " ORDER BY p.name, p.id LIMIT 1000", None if only is None else [uuid.UUID(i) for i in only],
    )


async def set_members(conn: asyncpg.Connection, tenant: str, provider_id: uuid.UUID, subjects: list[str]) -> None:
    await conn.execute("DELETE FROM provider_members WHERE provider_id = $1 AND NOT subject = ANY($2::text[])",
                       provider_id, subjects)
    await conn.executemany(
        "INSERT INTO provider_members (provider_id, tenant_id, subject) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        [(provider_id, tenant, s) for s in subjects],
    )


async def add_member(conn: asyncpg.Connection, tenant: str, provider_id: uuid.UUID, subject: str) -> None:
    await conn.execute(
        "INSERT INTO provider_members (provider_id, tenant_id, subject) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        provider_id, tenant, subject,
    )


async def public_providers(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The providers with published offers the acting network shows, its own and those of networks
    that share offers with it, with how many (the function of migration 0027: row-level security
    would show only the network's own providers)."""
    return await conn.fetch("SELECT * FROM public_providers()")


# ---- network sharing -------------------------------------------------------------------------


async def get_sharing(conn: asyncpg.Connection, tenant: str) -> list[str]:
    return list(await conn.fetchval("SELECT networks FROM network_sharing WHERE tenant_id = $1", tenant) or [])


async def hold_sharing(conn: asyncpg.Connection, tenant: str) -> list[str]:
    """The network's default shares, held to commit (a share lock) by a transaction that writes its
    offers: each written offer derives who sees it from them (offers_keep_visible_to), and a sharing
    change, which updates the row first, now waits for such a write to commit or the write for the
    change. Before, an offer written while the shares changed kept the audience of the old ones,
    and so did its event. The row is made if the network has none yet, so that even the first
    change has a row to wait on."""
    await conn.execute("INSERT INTO network_sharing (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING", tenant)
    return list(await conn.fetchval("SELECT networks FROM network_sharing WHERE tenant_id = $1 FOR SHARE", tenant))


async def set_sharing(conn: asyncpg.Connection, tenant: str, networks: list[str]) -> list[uuid.UUID]:
    """Store the defaults and re-derive who sees each offer; the published offers whose audience
    changed are returned (their consumers must hear of it)."""
    await conn.execute(
        "INSERT INTO network_sharing (tenant_id, networks) VALUES ($1, $2) ON CONFLICT (tenant_id)"
        " DO UPDATE SET networks = excluded.networks, updated_at = now()", tenant, networks,
    )
    before = {r["id"]: r["visible_to"] for r in await conn.fetch(
        "SELECT id, visible_to FROM offers WHERE tenant_id = $1 FOR UPDATE", tenant)}
    rows = await conn.fetch(  # the trigger re-derives visible_to
        "UPDATE offers SET visible_to = visible_to WHERE tenant_id = $1 RETURNING id, status, visible_to", tenant)
    changed = [r["id"] for r in rows if r["status"] == "published" and set(r["visible_to"]) != set(before[r["id"]])]
    if changed:
        await conn.execute("UPDATE offers SET version = version + 1, updated_at = now() WHERE id = ANY($1::uuid[])",
                           changed)
    return changed


# ---- offers ----------------------------------------------------------------------------------

_OFFER_COLUMNS = (
    # what offer_state reads, not o.*: the two search documents are the row's widest columns and
    # nobody reads them back
    "o.id, o.tenant_id, o.provider_id, o.external_id, o.title, o.description, o.skills, o.esco_skills,"
    " o.occupation_codes, o.qualification, o.format, o.schedule, o.hours, o.price_eur, o.funding,"
    " o.measure_number, o.url, o.visibility_scope, o.visibility_networks, o.language, o.status, o.version,"
    " o.updated_at, coalesce((SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object("
    " 'external_id', s.external_id, 'start', s.start_date, 'price_eur', s.price_eur, 'schedule', s.schedule))"
    " || jsonb_build_object('end', s.end_date, 'location', CASE WHEN s.lat IS NULL THEN NULL ELSE"
    " jsonb_build_object('street', s.street, 'zip', s.zip, 'city', s.city, 'lat', s.lat, 'lon', s.lon) END)"
    " ORDER BY s.position) FROM offer_sessions s WHERE s.offer_id = o.id), '[]'::jsonb) AS sessions,"
    " (SELECT n.networks FROM network_sharing n WHERE n.tenant_id = o.tenant_id) AS network_shares"
)


def effective_visibility(scope: str, networks: list[str], network_shares: list[str] | None) -> dict[str, Any]:
    """The offer's own visibility widened by its network's default shares: what consumers (matching)
    must apply, so the event carries it."""
    if scope == "all":
        return {"scope": "all", "networks": []}
    shared = sorted(set(networks if scope == "networks" else []) | set(network_shares or []))
    return {"scope": "networks", "networks": shared} if shared else {"scope": "home", "networks": []}


def offer_state(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "tenant": row["tenant_id"], "provider_id": str(row["provider_id"]),
        "external_id": row["external_id"], "title": row["title"], "description": row["description"],
        "skills": list(row["skills"]), "esco_skills": list(row["esco_skills"]),
        "occupation_codes": list(row["occupation_codes"]), "qualification": row["qualification"],
        "format": row["format"], "schedule": row["schedule"], "hours": _number(row["hours"]),
        "price_eur": _number(row["price_eur"]), "funding": row["funding"], "measure_number": row["measure_number"],
        "url": row["url"], "sessions": [_session(s) for s in row["sessions"]],
        "visibility": effective_visibility(row["visibility_scope"], list(row["visibility_networks"]),
                                           row["network_shares"]),
        "own_visibility": {"scope": row["visibility_scope"], "networks": list(row["visibility_networks"])},
        "language": row["language"], "status": row["status"], "version": row["version"],
        "updated_at": row["updated_at"].isoformat(),
    }


def written_state(record: dict[str, Any], body: OfferIn, version: int, updated_at: datetime,
                  network_shares: list[str] | None) -> dict[str, Any]:
    """The state an offer has once this body is written (what reading it back with ``get_offer``
    gives, the sessions as its SQL builds them), without reading it back: an import's events are
    built while the batch before is written. ``record``: the body's ``offer_record``."""
    sessions = []
    for s in body.sessions:
        session = {k: v for k, v in (("external_id", s.external_id), ("start", s.start.isoformat()),
                                     ("price_eur", s.price_eur), ("schedule", s.schedule and s.schedule.value))
                   if v is not None}
        place = s.location
        session |= {"end": s.end and s.end.isoformat(), "location": None if place is None or place.lat is None else {
            "street": place.street, "zip": place.zip, "city": place.city, "lat": place.lat, "lon": place.lon}}
        sessions.append(session)
    return offer_state(record | {
        "sessions": sessions, "network_shares": network_shares, "version": version, "updated_at": updated_at})


def _session(session: dict[str, Any]) -> dict[str, Any]:
    if session.get("price_eur") is not None:
        session["price_eur"] = _number(session["price_eur"])
    if session.get("location") and session["location"].get("street") is None:
        del session["location"]["street"]
    return session


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    return int(value) if value == int(value) else float(value)


async def get_offer(conn: asyncpg.Connection, offer_id: uuid.UUID, *, lock: bool = False) -> asyncpg.Record | None:
    """One offer; ``lock`` serialises writers of the same offer until commit."""
    if lock:
        await conn.execute("SELECT 1 FROM offers WHERE id = $1 FOR UPDATE", offer_id)
    return await conn.fetchrow(f"SELECT {_OFFER_COLUMNS} FROM offers o WHERE o.id = $1", offer_id)


async def get_offers(conn: asyncpg.Connection, offer_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Offers by id, in the order given (the search's ranking)."""
    rows = await conn.fetch(f"SELECT {_OFFER_COLUMNS} FROM offers o WHERE o.id = ANY($1::uuid[])", offer_ids)
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in offer_ids if i in by_id]


_OFFER_FIELDS = ("external_id, title, description, skills, esco_skills, occupation_codes, qualification, format,"
                 " schedule, hours, price_eur, funding, measure_number, url, visibility_scope, visibility_networks,"
                 " language, status, import_hash")


_OFFER_NAMES = tuple(c.strip() for c in _OFFER_FIELDS.split(","))
_SESSION_FIELDS = ("offer_id, tenant_id, position, external_id, start_date, end_date, price_eur, schedule, street, zip,"
                   " city, lat, lon")
# Set-based writes: the rows travel as one JSON array, typed by the table's own row type. One
# statement for a whole batch instead of one per row (each a parse, bind and execute). Each row
# also carries its sessions' places and starts, from which the statement sets where and when the
# offer is held (``reach``, migrations 0016 and 0024; the sessions' own rows are written after the
# offer's).
_INSERT_OFFERS = (f"INSERT INTO offers (id, tenant_id, provider_id, {_OFFER_FIELDS}, reach)"
                  f" SELECT r.id, r.tenant_id, r.provider_id, {', '.join('r.' + c for c in _OFFER_NAMES)},"
                  " offer_reach(r.format, e->'sessions')"
                  " FROM jsonb_array_elements($1) e, jsonb_populate_record(NULL::offers, e) r")
_UPDATE_OFFERS = (
    "UPDATE offers o SET provider_id = r.provider_id, " + ", ".join(f"{c} = r.{c}" for c in _OFFER_NAMES)
    + ", reach = offer_reach(r.format, e->'sessions'), withdrawn_by_import = false, version = o.version + 1,"
    " updated_at = now()"
    " FROM jsonb_array_elements($1) e, jsonb_populate_record(NULL::offers, e) r"
    " WHERE o.id = r.id AND o.tenant_id = r.tenant_id")
_INSERT_SESSIONS = (f"INSERT INTO offer_sessions ({_SESSION_FIELDS}) SELECT {_SESSION_FIELDS}"
                    " FROM jsonb_populate_recordset(NULL::offer_sessions, $1)")

Written = tuple[uuid.UUID, OfferIn, str | None]  # (offer id, body, import hash)


async def insert_offer(conn: asyncpg.Connection, tenant: str, body: OfferIn, import_hash: str | None = None,
                       ) -> uuid.UUID:
    offer_id = new_id()
    await insert_offers(conn, tenant, [(offer_id, body, import_hash)])
    return offer_id


async def update_offer(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, body: OfferIn,
                       import_hash: str | None = None) -> None:
    await update_offers(conn, tenant, [(offer_id, body, import_hash)])


@dataclass(frozen=True)
class OfferRows:
    """New offers and their sessions as the two statements that insert them take them, encoded
    ahead: an import builds a batch's rows while the batch before is written, so that PostgreSQL
    does not wait for them between statements."""

    offers: orjson.Fragment
    sessions: orjson.Fragment | None  # None: no sessions


def offer_rows(tenant: str, records: list[dict[str, Any]], offers: list[Written]) -> OfferRows:
    """``records``: each offer's ``offer_record``, in the order of ``offers``."""
    sessions = _session_rows(tenant, offers)
    return OfferRows(orjson.Fragment(orjson.dumps(records)),
                     orjson.Fragment(orjson.dumps(sessions)) if sessions else None)


async def insert_offer_rows(conn: asyncpg.Connection, rows: OfferRows) -> None:
    await conn.execute(_INSERT_OFFERS, rows.offers)
    if rows.sessions is not None:
        await conn.execute(_INSERT_SESSIONS, rows.sessions)


async def insert_offers(conn: asyncpg.Connection, tenant: str, offers: list[Written]) -> None:
    """New offers with their sessions: two statements, whatever their number."""
    await insert_offer_rows(conn, offer_rows(tenant, [offer_record(tenant, *offer) for offer in offers], offers))


async def update_offers(conn: asyncpg.Connection, tenant: str, offers: list[Written]) -> None:
    """Offers changed whole, their sessions replaced (the caller holds their row locks)."""
    await conn.execute(_UPDATE_OFFERS, [offer_record(tenant, *offer) for offer in offers])
    await conn.execute("DELETE FROM offer_sessions WHERE offer_id = ANY($1::uuid[])", [o[0] for o in offers])
    if sessions := _session_rows(tenant, offers):
        await conn.execute(_INSERT_SESSIONS, sessions)


async def set_offer_status(conn: asyncpg.Connection, tenant: str, offer_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        "UPDATE offers SET status = $3, version = version + 1, updated_at = now()"
        " WHERE id = $1 AND tenant_id = $2", offer_id, tenant, status,
    )


# The AZAV rule of domain.check_funding in SQL, over a provider p and its offer o: certified, and
# valid today and when the offer's last session starts.
_QCG_HOLDS = (
    "coalesce((p.azav ->> 'certified')::boolean, false) AND (p.azav ->> 'valid_until' IS NULL"
    " OR (p.azav ->> 'valid_until')::date >= greatest($2::date,"
    " (SELECT max(s.start_date) FROM offer_sessions s WHERE s.offer_id = o.id)))"
)


async def revoke_qcg(conn: asyncpg.Connection, tenant: str, provider_ids: list[uuid.UUID] | None,
                     today: date) -> list[asyncpg.Record]:
    """Offers of these providers (None: all of the network's, skipping those an import is writing)
    that say qcg where the rule no longer holds lose the flag (not withdrawn ones); their id, provider
    and status are returned. The import's record of them is dropped, so that the provider's next
    import, once certified again, writes them afresh instead of finding them unchanged."""
    return await conn.fetch(
        "UPDATE offers o SET funding = o.funding || '{\"qcg\": false}'::jsonb, version = o.version + 1,"
        " updated_at = now(), import_hash = NULL FROM providers p"
        " WHERE p.id = o.provider_id AND o.tenant_id = $1 AND ($3::uuid[] IS NULL OR o.provider_id = ANY($3::uuid[]))"
        f" AND o.funding @> '{{\"qcg\": true}}' AND o.status <> 'withdrawn' AND NOT ({_QCG_HOLDS})"
        # an import holds its provider's offers for minutes and locks them in its own order: the sweep
        # leaves them to its next round (the import itself checked them against the same certificate)
        " AND ($3::uuid[] IS NOT NULL OR pg_try_advisory_xact_lock(hashtext('catalog-import'), hashtext(p.id::text)))"
        " RETURNING o.id, o.provider_id, o.status", tenant, today, provider_ids)


def offer_record(tenant: str, offer_id: uuid.UUID, body: OfferIn, import_hash: str | None) -> dict[str, Any]:
    """An offer's row as the insert and update statements take it (JSON, typed by the table's row type)."""
    values = (
        body.external_id, body.title, body.description, body.skills, body.esco_skills, body.occupation_codes,
        body.qualification.value, body.format.value, body.schedule.value, body.hours, body.price_eur,
        body.funding.model_dump(), body.measure_number, body.url, body.visibility.scope, body.visibility.networks,
        body.language, body.status, import_hash,
    )
    sessions = [{"lat": s.location.lat if s.location else None, "lon": s.location.lon if s.location else None,
                 "start": s.start.isoformat()} for s in body.sessions]
    return {"id": str(offer_id), "tenant_id": tenant, "provider_id": str(body.provider_id),
            **dict(zip(_OFFER_NAMES, values, strict=True)), "sessions": sessions}


def _session_rows(tenant: str, offers: list[Written]) -> list[dict[str, Any]]:
    return [{"offer_id": str(offer_id), "tenant_id": tenant, "position": i, "external_id": s.external_id,
             "start_date": s.start.isoformat(), "end_date": s.end.isoformat() if s.end else None,
             "price_eur": s.price_eur, "schedule": s.schedule.value if s.schedule else None,
             **({"street": s.location.street, "zip": s.location.zip, "city": s.location.city,
                 "lat": s.location.lat, "lon": s.location.lon} if s.location else {})}
            for offer_id, body, _ in offers for i, s in enumerate(body.sessions)]


# ---- search ----------------------------------------------------------------------------------

TOTAL_BOUND = 1000    # exact total up to here, "more than" beyond (as search engines do)
MAX_SKIP = 1000  # the furthest a numbered page may start (the search functions' cap); deeper goes by cursor
_WORD = re.compile(r"[0-9A-Za-zÀ-ÖØ-öø-ÿ]+")  # Latin letters and digits: nothing to_tsquery could misread
# Words a German query carries that say nothing (once folded, "für" is no longer a stop word of
# PostgreSQL's list, so they are dropped here).
_STOP = frozenset("und oder für fuer mit ohne der die das des dem den ein eine einer eines im in ins zum zur"
                  " von vom auf am an bei als wie nach über ueber".split())


def text_query(q: str, compounds: bool = False) -> str | None:
    """A ``to_tsquery`` expression: every word must match, as a prefix ("Schweiß" finds
    "Schweißer"); with ``compounds``, a long word may also match as two parts of a compound
    ("Staplerschein": stapler* & schein, found in "Gabelstapler-Führerschein")."""
    terms = []
    for word in _WORD.findall(q)[:12]:
        if word.casefold() in _STOP or (word.isdigit() and len(word) < 3):
            continue
        alternatives = [f"{word}:*"]
        if compounds:
            alternatives += _compound_parts(word)
        terms.append("(" + " | ".join(alternatives) + ")")
    return " & ".join(terms) or None


def _compound_parts(word: str) -> list[str]:
    if len(word) < 10 or not word.isalpha():
        return []
    return [f"({word[:i]}:* & {word[i:]})" for i in range(5, len(word) - 4)]


def splits_compounds(q: str | None) -> bool:
    """Whether the text has a word long enough to be tried as two parts of a compound."""
    return bool(q) and text_query(q, compounds=True) != text_query(q)


@dataclass
class OfferQuery:
    q: str | None = None
    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None
    formats: list[str] | None = None
    schedules: list[str] | None = None
    qualifications: list[str] | None = None
    start_from: date | None = None
    start_to: date | None = None
    min_hours: float | None = None
    max_hours: float | None = None
    max_price_eur: float | None = None
    funding: list[str] | None = None
    provider_id: uuid.UUID | None = None
    page_size: int = 20
    after: tuple[float, uuid.UUID] | None = None  # the keyset cursor: (rank, id) of the last hit seen
    skip: int = 0
    compounds: bool = False  # long words also as two parts (see text_query)

    def filters(self) -> dict[str, Any]:
        """The filters as the SQL functions take them (only what is set)."""
        values = {
            "q": text_query(self.q, self.compounds) if self.q else None, "formats": self.formats,
            "schedules": self.schedules,
            "qualifications": self.qualifications, "funding": self.funding,
            "provider_id": str(self.provider_id) if self.provider_id else None,
            "max_price_eur": self.max_price_eur, "min_hours": self.min_hours, "max_hours": self.max_hours,
            "start_from": self.start_from.isoformat() if self.start_from else None,
            "start_to": self.start_to.isoformat() if self.start_to else None,
        }
        if self.radius_km is not None:
            values |= {"lat": self.lat, "lon": self.lon, "radius_km": self.radius_km}
        return {k: v for k, v in values.items() if v is not None and v != []}

    def page(self) -> tuple[float | None, uuid.UUID | None, int, int]:
        """Which page the SQL functions give: after the cursor's (rank, id), its size, how many to skip."""
        after_rank, after_id = self.after or (None, None)
        return after_rank, after_id, self.page_size, self.skip


async def search_offers(conn: asyncpg.Connection, query: OfferQuery) -> list[asyncpg.Record]:
    """One page of (id, rank) of published offers the acting tenant may see, best first."""
    return await conn.fetch("SELECT id, rank FROM search_offer_page($1, $2, $3, $4, $5)",
                            query.filters(), *query.page())


async def count_and_page(conn: asyncpg.Connection, query: OfferQuery,
                         bound: int = TOTAL_BOUND) -> tuple[int, list[asyncpg.Record] | None]:
    """The total up to the bound and one more, and where it is within the bound the page of (id,
    rank) too, from the same read of the hits; None for the page where there are more (it is then
    walked, ``search_offers``)."""
    rows = await conn.fetch("SELECT total, id, rank FROM search_offer_count_page($1, $2, $3, $4, $5, $6)",
                            query.filters(), bound, *query.page())
    total = rows[0]["total"]
    return total, (None if total > bound else [r for r in rows if r["id"] is not None])


async def count_offers(conn: asyncpg.Connection, query: OfferQuery, bound: int = TOTAL_BOUND) -> int:
    return (await count_and_page(conn, query, bound))[0]


async def facets_and_page(conn: asyncpg.Connection, query: OfferQuery,
                          bound: int = TOTAL_BOUND + 1) -> tuple[dict, list[asyncpg.Record] | None]:
    """Counts by format, schedule, qualification and funding over the first ``bound`` hits (all of
    them while the total is exact: the search's own total is the formats' sum), and where those are
    all the hits, the page of (id, rank) too, from the same read; None for the page where there are
    more (it is then walked, ``search_offers``)."""
    facets: dict[str, dict[str, int]] = {"format": {}, "schedule": {}, "qualification": {}, "funding": {}}
    page = []
    rows = await conn.fetch("SELECT facet, value, n, id, rank FROM search_offer_facets_page($1, $2, $3, $4, $5, $6)",
                            query.filters(), bound, *query.page())
    for row in rows:
        if row["facet"] is None:
            page.append(row)
        else:
            facets[row["facet"]][row["value"]] = row["n"]
    return facets, (page if sum(facets["format"].values()) < bound else None)
