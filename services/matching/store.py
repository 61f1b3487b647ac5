"""Matching's SQL, run inside the caller's tenant transaction (row-level security applies)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import asyncpg

from services.matching import geo
from services.matching.domain import LOCATED_FORMATS, as_date

REMOTE_FORMATS = ("online", "distance")


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# ---- offers ---------------------------------------------------------------------------------------

async def get_offer(conn: asyncpg.Connection, offer_id: str) -> asyncpg.Record | None:
    """The stored offer (acting as its home tenant, which sees drafts too)."""
    return await conn.fetchrow("SELECT state, status, version FROM offers WHERE id = $1", _uuid(offer_id))


async def upsert_offer(conn: asyncpg.Connection, offer: dict[str, Any], skill_cluster: str | None) -> bool:
    """Store the offer's state unless a newer version is already here; True when stored."""
    starts = [s["start"] for s in offer["sessions"]] or [None]
    row = await conn.fetchval(
        "INSERT INTO offers (id, tenant_id, provider_id, external_id, title, format, price_eur, qcg,"
        " visibility_scope, visibility_networks, status, version, state, first_start, last_start, skill_cluster,"
        " remote)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::text::date, $15::text::date, $16,"
        " $17)"
        " ON CONFLICT (id) DO UPDATE SET provider_id = excluded.provider_id, external_id = excluded.external_id,"
        " title = excluded.title, format = excluded.format, price_eur = excluded.price_eur, qcg = excluded.qcg,"
        " visibility_scope = excluded.visibility_scope, visibility_networks = excluded.visibility_networks,"
        " status = excluded.status, version = excluded.version, state = excluded.state,"
        " first_start = excluded.first_start, last_start = excluded.last_start,"
        " skill_cluster = coalesce(excluded.skill_cluster, offers.skill_cluster), remote = excluded.remote,"
        " updated_at = now()"
        " WHERE offers.version < excluded.version RETURNING true",
        _uuid(offer["id"]), offer["tenant"], _uuid(offer["provider_id"]), offer.get("external_id"),
        offer["title"], offer["format"], offer.get("price_eur"), offer["funding"]["qcg"],
        offer["visibility"]["scope"], offer["visibility"].get("networks", []), offer["status"], offer["version"],
        offer, min(filter(None, starts), default=None), max(filter(None, starts), default=None), skill_cluster,
        offer["format"] in REMOTE_FORMATS,
    )
    return bool(row)


async def replace_sessions(conn: asyncpg.Connection, offer: dict[str, Any]) -> None:
    """The offer's sessions as rows of hard-constraint columns (acting as the offer's home tenant)."""
    offer_id = _uuid(offer["id"])
    await conn.execute("DELETE FROM offer_sessions WHERE offer_id = $1", offer_id)
    located = offer["format"] in LOCATED_FORMATS
    rows = []
    for n, session in enumerate(offer["sessions"]):
        loc = session.get("location") or None
        lat, lon = (loc["lat"], loc["lon"]) if loc else (None, None)
        rows.append((
            offer_id, n, offer["tenant"], offer["status"], offer["visibility"]["scope"],
            offer["visibility"].get("networks", []), offer["format"], offer.get("price_eur"),
            bool(offer["funding"]["qcg"]), as_date(session["start"]), lat, lon,
            geo.cell(lat, lon) if located and loc else None, (loc or {}).get("city"),
            geo.region((loc or {}).get("zip"), lat, lon) if loc else None,
        ))
    if rows:  # (COPY does not go with row-level security)
        await conn.executemany(
            "INSERT INTO offer_sessions (offer_id, n, tenant_id, status, visibility_scope, visibility_networks,"
            " format, price_eur, qcg, start_date, lat, lon, cell, city, region)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)", rows)


async def vector_hash(conn: asyncpg.Connection, offer_id: str) -> str | None:
    return await conn.fetchval("SELECT text_hash FROM offer_vectors WHERE offer_id = $1", _uuid(offer_id))


async def stored_vectors(conn: asyncpg.Connection, offer_ids: list[str]) -> dict[str, bytes]:
    rows = await conn.fetch("SELECT offer_id, vector FROM offer_vectors WHERE offer_id = ANY($1::uuid[])",
                            [_uuid(i) for i in offer_ids])
    return {str(r["offer_id"]): r["vector"] for r in rows}


async def put_vector(conn: asyncpg.Connection, offer_id: str, text_hash: str, vector: bytes) -> None:
    """Store a new vector; it gets its change sequence at the end of the transaction (stamp_offers)."""
    await conn.execute(
        "INSERT INTO offer_vectors (offer_id, text_hash, vector, change_seq) VALUES ($1, $2, $3, 0)"
        " ON CONFLICT (offer_id) DO UPDATE SET text_hash = excluded.text_hash, vector = excluded.vector,"
        " change_seq = 0", _uuid(offer_id), text_hash, vector)


async def stamp_offers(conn: asyncpg.Connection, offer_ids: list[str]) -> None:
    """Give changed offers (a new vector, or new facts for the hard constraints) a new change sequence
    as the last step of the transaction, under a lock held to commit: sequences are then given in
    commit order, so a replica's index reading "everything above N" never skips a change that
    commits late."""
    if not offer_ids:
        return
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('matching:offer-vector-seq'))")
    await conn.execute("UPDATE offer_vectors SET change_seq = nextval('offer_vector_seq') WHERE offer_id = ANY($1)",
                       [_uuid(i) for i in offer_ids])


async def offer_states(conn: asyncpg.Connection, offer_ids: list[str]) -> dict[str, dict]:
    rows = await conn.fetch("SELECT id, state FROM offers WHERE id = ANY($1::uuid[])", [_uuid(i) for i in offer_ids])
    return {str(r["id"]): r["state"] for r in rows}


async def visible_offers(conn: asyncpg.Connection, offer_ids: list[str]) -> set[str]:
    """Those of the offers the acting network may see (the policy decides)."""
    rows = await conn.fetch("SELECT id FROM offers WHERE id = ANY($1::uuid[])", [_uuid(i) for i in offer_ids])
    return {str(r["id"]) for r in rows}


# ---- demands ----------------------------------------------------------------------------------------

async def insert_demand(conn: asyncpg.Connection, demand: dict[str, Any], created_by: str, vector: bytes,
                        skill_cluster: str | None, region: str | None) -> None:
    await conn.execute(
        "INSERT INTO demands (id, tenant_id, created_by, owner, status, formats, start_from, start_to, state,"
        " vector, skill_cluster, region, participants)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::text::date, $8::text::date, $9, $10, $11, $12, $13)",
        _uuid(demand["id"]), demand["tenant"], created_by, demand["owner"], demand["status"], demand["formats"],
        demand["start_from"], demand["start_to"], demand, vector, skill_cluster, region, demand["participants"],
    )


async def update_demand(conn: asyncpg.Connection, demand: dict[str, Any], vector: bytes | None = None,
                        skill_cluster: str | None = None, region: str | None = None) -> None:
    await conn.execute(
        "UPDATE demands SET status = $2, formats = $3, start_from = $4::text::date, start_to = $5::text::date,"
        " state = $6, vector = coalesce($7, vector), skill_cluster = coalesce($8, skill_cluster),"
        " region = coalesce($9, region), participants = $10, closed_reason = $11, updated_at = now()"
        " WHERE id = $1",
        _uuid(demand["id"]), demand["status"], demand["formats"], demand["start_from"], demand["start_to"], demand,
        vector, skill_cluster, region, demand["participants"], demand.get("closed_reason"),
    )


async def get_demand(conn: asyncpg.Connection, demand_id: uuid.UUID | str, *, lock: bool = False
                     ) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM demands WHERE id = $1" + (" FOR UPDATE" if lock else ""),
                               _uuid(demand_id))


async def set_ranking(conn: asyncpg.Connection, demand: dict[str, Any], ranking_vector: bytes | None,
                      best_score: float | None, ranked_offers: list[str] | None = None, total: int = 0) -> None:
    """The demand's expanded vector, its best score and the order of its best offers (with the number
    of feasible ones), as its last full ranking found them."""
    demand_id = _uuid(demand["id"])
    await conn.execute("UPDATE demands SET ranking_vector = $2, best_score = $3, ranked_total = $4 WHERE id = $1",
                       demand_id, ranking_vector, best_score, total)
    if ranked_offers is None:
        await conn.execute("DELETE FROM demand_rankings WHERE demand_id = $1", demand_id)
        return
    await conn.execute(
        "INSERT INTO demand_rankings (demand_id, tenant_id, offers, total) VALUES ($1, $2, $3::uuid[], $4)"
        " ON CONFLICT (demand_id) DO UPDATE SET offers = excluded.offers, total = excluded.total",
        demand_id, demand["tenant"], [_uuid(i) for i in ranked_offers], total)


async def kept_ranking(conn: asyncpg.Connection, demand_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT offers, total FROM demand_rankings WHERE demand_id = $1", _uuid(demand_id))


async def forget_rankings(conn: asyncpg.Connection, demand_ids: list[str]) -> None:
    """An offer change reached these demands: their kept order may no longer hold (rows locked in id
    order, as every offer change takes them)."""
    if not demand_ids:
        return
    await conn.execute(
        "DELETE FROM demand_rankings WHERE demand_id IN (SELECT demand_id FROM demand_rankings"
        " WHERE demand_id = ANY($1::uuid[]) ORDER BY demand_id FOR UPDATE)", [str(i) for i in demand_ids])


async def list_demands(conn: asyncpg.Connection, owner: str | None, status: str | None, limit: int,
                       offset: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT state FROM demands WHERE ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR status = $2)"
        " ORDER BY created_at DESC, id LIMIT $3 OFFSET $4", owner, status, limit, offset)


async def replace_keys(conn: asyncpg.Connection, demand: dict[str, Any], *, new: bool = False) -> None:
    """The demand's reverse-matching keys: one per acceptable format and grid cell (cell -1 for
    anywhere). Removed when the demand is no longer open. ``new``: a demand without keys yet."""
    demand_id = _uuid(demand["id"])
    if not new:
        await conn.execute("DELETE FROM demand_keys WHERE demand_id = $1", demand_id)
    if demand["status"] != "open":
        return
    employer = demand["employer"]
    cells = geo.cells_of_box(*geo.box(employer["lat"], employer["lon"], float(demand["max_distance_km"])))
    keys = [(fmt, c) for fmt in sorted(set(demand["formats"]))
            for c in (cells if fmt in LOCATED_FORMATS and cells is not None else [geo.WIDE])]
    await conn.execute(
        "INSERT INTO demand_keys (demand_id, tenant_id, format, cell, start_from, start_to, max_price_eur,"
        " funding_required, lat, lon, max_distance_km)"
        " SELECT $1, $2, f, c, $5, $6, $7, $8, CASE WHEN l THEN $9::float8 END, CASE WHEN l THEN $10::float8 END,"
        " CASE WHEN l THEN $11::float8 END FROM unnest($3::text[], $4::int[], $12::bool[]) AS k(f, c, l)",
        demand_id, demand["tenant"], [f for f, _ in keys], [c for _, c in keys], as_date(demand["start_from"]),
        as_date(demand["start_to"]), demand.get("max_price_eur"), bool(demand["funding_required"]),
        float(employer["lat"]), float(employer["lon"]), float(demand["max_distance_km"]),
        [f in LOCATED_FORMATS for f, _ in keys])


async def demands_for_offer(conn: asyncpg.Connection, tenant: str, offer: dict[str, Any]) -> list[str]:
    """The open demands of the acting tenant that an offer's sessions can concern, by the demand keys:
    same format, the session's cell (or anywhere), the session's start inside the window, price,
    funding, and for located formats the exact great-circle distance."""
    located = offer["format"] in LOCATED_FORMATS
    starts, cells, lats, lons = [], [], [], []
    for session in offer["sessions"]:
        loc = session.get("location")
        if located and not loc:
            continue
        starts.append(as_date(session["start"]))
        cells.append(geo.cell(loc["lat"], loc["lon"]) if located else geo.WIDE)
        lats.append(float(loc["lat"]) if located else None)
        lons.append(float(loc["lon"]) if located else None)
    if not starts:
        return []
    # One scan of the keys of the sessions' cells (and "anywhere") that open by the last start, each
    # key then checked against the sessions; an index-only scan (demand_keys_reach carries every column).
    rows = await conn.fetch(
        "SELECT k.demand_id::text FROM demand_keys k"
        " WHERE k.tenant_id = $1 AND k.format = $4 AND k.cell = ANY($9::int[]) AND k.start_from <= $10"
        " AND (k.max_price_eur IS NULL OR $5::numeric <= k.max_price_eur) AND (NOT k.funding_required OR $6)"
        " AND EXISTS (SELECT 1 FROM unnest($2::date[], $3::int[], $7::float8[], $8::float8[])"
        " AS s(start_date, cell, lat, lon)"
        " WHERE k.cell IN (s.cell, -1) AND k.start_from <= s.start_date AND k.start_to >= s.start_date"
        " AND (k.lat IS NULL OR s.lat IS NULL OR 2 * 6371.0088 * asin(sqrt(least(1.0,"
        " power(sin(radians(s.lat - k.lat) / 2), 2) + cos(radians(k.lat)) * cos(radians(s.lat))"
        " * power(sin(radians(s.lon - k.lon) / 2), 2)))) <= k.max_distance_km))"
        " GROUP BY k.demand_id",
        tenant, starts, cells, offer["format"], offer.get("price_eur") or 0, bool(offer["funding"]["qcg"]),
        lats, lons, sorted({*cells, geo.WIDE}), max(starts),
    )
    return [r[0] for r in rows]


# Many demand ids go in as the strings they are: an offer change reaches thousands of demands, and
# making a Python UUID of each (or casting text[] in the query) cost more than the query. asyncpg
# encodes a uuid parameter from its string.

async def open_demand_states(conn: asyncpg.Connection, demand_ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id::text, state, vector, ranking_vector, best_score FROM demands"
        " WHERE id = ANY($1::uuid[]) AND status = 'open' ORDER BY id", [str(i) for i in demand_ids])


async def expired_demands(conn: asyncpg.Connection, today: date, limit: int = 200) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id FROM demands WHERE status = 'open' AND start_to < $1 ORDER BY start_to LIMIT $2", today, limit)


# ---- matches ---------------------------------------------------------------------------------------

async def matches_of_demand(conn: asyncpg.Connection, demand_id: str) -> list[asyncpg.Record]:
    return (await matches_of_demands(conn, [str(demand_id)]))[str(demand_id)]


async def demands_matched_to_offer(conn: asyncpg.Connection, offer_id: str) -> list[str]:
    rows = await conn.fetch("SELECT demand_id FROM matches WHERE offer_id = $1 AND status = 'active'", _uuid(offer_id))
    return [str(r["demand_id"]) for r in rows]


async def lock_demands(conn: asyncpg.Connection, demand_ids: list[str]) -> list[asyncpg.Record]:
    """Many demands' rows, locked in id order (one order for every transaction: no deadlock)."""
    if not demand_ids:
        return []
    return await conn.fetch("SELECT * FROM demands WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
                            [str(i) for i in demand_ids])


async def matches_of_demands(conn: asyncpg.Connection, demand_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    out: dict[str, list[asyncpg.Record]] = {i: [] for i in demand_ids}
    for row in await conn.fetch("SELECT * FROM matches WHERE demand_id = ANY($1::uuid[])",
                                [str(i) for i in demand_ids]):
        out.setdefault(str(row["demand_id"]), []).append(row)
    return out


async def raise_best_scores(conn: asyncpg.Connection, scores: list[tuple[str, float]]) -> None:
    await conn.execute(
        "UPDATE demands d SET best_score = greatest(d.best_score, x.score)"
        " FROM unnest($1::uuid[], $2::float8[]) AS x(id, score) WHERE d.id = x.id",
        [_uuid(i) for i, _ in scores], [score for _, score in scores])


async def insert_matches(conn: asyncpg.Connection, tenant: str,
                         pairs: list[tuple[str, dict, float, dict, bool]]) -> list[asyncpg.Record]:
    """New matches of the network's demands (demand id, offer, score, reasons, announced) in one
    statement: one offer with many demands, or one demand with many offers. A pair matched before is
    left out (it has its row: handlers._add brings it back)."""
    return await conn.fetch(
        "INSERT INTO matches (id, tenant_id, demand_id, offer_id, score, reasons, status, provider_id, offer_tenant,"
        " announced) SELECT x.id, $1, x.demand_id, x.offer_id, x.score, x.reasons, 'active', x.provider_id,"
        " x.offer_tenant, x.announced"
        " FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::float8[], $8::jsonb[],"
        " $9::bool[]) AS x(id, demand_id, offer_id, provider_id, offer_tenant, score, reasons, announced)"
        " ON CONFLICT (demand_id, offer_id) DO NOTHING RETURNING *",
        tenant, [uuid.uuid4() for _ in pairs], [_uuid(d) for d, *_ in pairs], [_uuid(o["id"]) for _, o, *_ in pairs],
        [_uuid(o["provider_id"]) for _, o, *_ in pairs], [o["tenant"] for _, o, *_ in pairs],
        [p[2] for p in pairs], [p[3] for p in pairs], [p[4] for p in pairs])


async def update_match(conn: asyncpg.Connection, match_id: uuid.UUID, status: str,
                       score: float | None = None, reasons: dict | None = None) -> asyncpg.Record:
    return await conn.fetchrow(
        "UPDATE matches SET status = $2, score = coalesce($3, score), reasons = coalesce($4, reasons),"
        " updated_at = now() WHERE id = $1 RETURNING *", match_id, status, score, reasons,
    )


async def update_matches(conn: asyncpg.Connection, match_ids: list[uuid.UUID], status: str) -> list[asyncpg.Record]:
    """``update_match`` to a new status for many matches at once."""
    return await conn.fetch("UPDATE matches SET status = $2, updated_at = now() WHERE id = ANY($1::uuid[])"
                            " RETURNING *", match_ids, status)


async def active_matches(conn: asyncpg.Connection, demand_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT m.*, o.external_id, o.title, o.provider_id AS offer_provider, o.state AS offer"
        " FROM matches m LEFT JOIN offers o ON o.id = m.offer_id"
        " WHERE m.demand_id = $1 AND m.status = 'active' ORDER BY m.score DESC, m.offer_id", demand_id,
    )


# ---- providers and the provider's view ---------------------------------------------------------------

async def upsert_provider(conn: asyncpg.Connection, provider: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO providers (id, tenant_id, name, members, version) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, members = excluded.members,"
        " version = excluded.version, updated_at = now() WHERE providers.version <= excluded.version",
        _uuid(provider["id"]), provider["tenant"], provider["name"], list(provider.get("members") or []),
        int(provider.get("version") or 0),
    )


async def providers_of(conn: asyncpg.Connection, subject: str, claimed: list[str]) -> list[str]:
    rows = await conn.fetch("SELECT id FROM providers WHERE $1 = ANY (members) OR id = ANY($2::uuid[])",
                            subject, [_uuid(p) for p in claimed if _is_uuid(p)])
    return [str(r["id"]) for r in rows]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


async def put_provider_match(conn: asyncpg.Connection, match: asyncpg.Record, offer: dict, demand_view: dict,
                             employer: dict) -> None:
    """In the provider's tenant (the caller switched to it)."""
    await put_provider_matches(conn, [(match, offer, demand_view, employer)])


async def put_provider_matches(conn: asyncpg.Connection, rows: list[tuple[asyncpg.Record, dict, dict, dict]]
                               ) -> None:
    """``put_provider_match`` for many (match, offer, demand view, employer) of one provider tenant."""
    await conn.executemany(
        "INSERT INTO provider_matches (match_id, tenant_id, provider_id, offer_id, offer_title, demand_id,"
        " demand_tenant, demand, employer, score, reasons) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (match_id) DO UPDATE SET offer_title = excluded.offer_title, demand = excluded.demand,"
        " employer = excluded.employer, score = excluded.score, reasons = excluded.reasons, updated_at = now()",
        [(m["id"], o["tenant"], _uuid(o["provider_id"]), _uuid(o["id"]), o["title"], m["demand_id"], m["tenant_id"],
          view, employer, m["score"], m["reasons"]) for m, o, view, employer in rows])


async def drop_provider_match(conn: asyncpg.Connection, match_id: uuid.UUID) -> None:
    await drop_provider_matches(conn, [match_id])


async def drop_provider_matches(conn: asyncpg.Connection, match_ids: list[uuid.UUID]) -> None:
    await conn.execute("DELETE FROM provider_matches WHERE match_id = ANY($1::uuid[])", match_ids)


async def provider_view(conn: asyncpg.Connection, provider_ids: list[str] | None, limit: int,
                        offset: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM provider_matches WHERE ($1::uuid[] IS NULL OR provider_id = ANY($1::uuid[]))"
        " ORDER BY updated_at DESC, match_id LIMIT $2 OFFSET $3",
        [_uuid(p) for p in provider_ids] if provider_ids is not None else None, limit, offset)
