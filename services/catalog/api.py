"""Catalog HTTP routes: parse, call a handler, shape the answer."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from runtime import places
from runtime.db import tenant_transaction
from runtime.guards import UnsafeJson, route_policy, strict_json
from runtime.http import Actor, Problem, RuntimeDep, require_roles
from runtime.models import Day, Text
from runtime.service import ServiceRuntime
from services.catalog import handlers, importing, openqcat, store, wbsuche
from services.catalog.domain import (
    TENANT_SLUG,
    Acting,
    Format,
    FundingFlag,
    MembersIn,
    OfferIn,
    ProviderIn,
    Qualification,
    Schedule,
    SharingIn,
)

router = APIRouter(prefix="/v1", tags=["catalog"])

NETWORK_WIDE = ("network_admin", "operator")
Publisher = Annotated[Actor, require_roles("provider", *NETWORK_WIDE)]
Reader = Annotated[Actor, require_roles("provider", *NETWORK_WIDE, "counselor", "employer")]
Admin = Annotated[Actor, require_roles(*NETWORK_WIDE)]
IfMatch = Annotated[str | None, Header(description='the ETag last read, e.g. "3"; a stale one answers 412')]


@asynccontextmanager
async def acting_transaction(runtime: ServiceRuntime, actor: Actor) -> AsyncIterator[
        tuple[asyncpg.Connection, Acting]]:
    """The tenant's transaction, told (for row-level security too) which providers the actor acts
    for: all of the network's for network_admin and operator; else its claim and its memberships."""
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        subject, username = actor.principal.subject, actor.principal.username
        if actor.has_any(*NETWORK_WIDE):
            acting = Acting(actor.tenant, subject, None, username)
            await store.set_acting(conn, acting)
        else:
            acting = await store.act_as_member(conn, actor.tenant, subject, frozenset(actor.principal.providers),
                                               username)
        yield conn, acting


def etag(state: dict) -> str:
    return f'"{state["version"]}"'


def expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    try:
        return int(if_match.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise Problem(412, "Precondition failed", "If-Match must be an ETag of this offer, e.g. \"3\".") from None


def _with_etag(response: Response, state: dict) -> dict:
    response.headers["ETag"] = etag(state)
    return state


@router.post("/providers", status_code=201, summary="Register an education provider (its creator acts for it)")
async def register_provider(body: ProviderIn, actor: Publisher, runtime: RuntimeDep) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return await handlers.register_provider(conn, acting, body, becomes_member=not actor.has_any(*NETWORK_WIDE))


@router.get("/providers", summary="Providers of this network (mine=true: those the user acts for)")
async def list_providers(actor: Reader, runtime: RuntimeDep, mine: bool = False) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return {"items": await handlers.list_providers(conn, acting, mine=mine)}


@router.get("/providers/{provider_id}", summary="A provider of this network")
async def get_provider(provider_id: UUID, actor: Reader, runtime: RuntimeDep) -> dict:
    async with acting_transaction(runtime, actor) as (conn, _):
        return await handlers.get_provider(conn, provider_id)


@router.put("/providers/{provider_id}", summary="Change a provider (its members and network admins)")
async def change_provider(provider_id: UUID, body: ProviderIn, actor: Publisher, runtime: RuntimeDep) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return await handlers.change_provider(conn, acting, provider_id, body)


@router.put("/providers/{provider_id}/members", summary="Set who acts for a provider (network admins)")
async def set_provider_members(provider_id: UUID, body: MembersIn, actor: Admin, runtime: RuntimeDep) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return await handlers.set_members(conn, acting, provider_id, body)


@router.get("/sharing", summary="Networks all of this network's published offers are shared with")
async def get_sharing(actor: Reader, runtime: RuntimeDep) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return await handlers.get_sharing(conn, acting)


@router.put("/sharing", summary="Share all of this network's published offers with these networks (admins)")
async def set_sharing(body: SharingIn, actor: Admin, runtime: RuntimeDep) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return await handlers.set_sharing(conn, acting, body)


@router.get("/audit", summary="Administrative actions in the catalog of this network, newest first (admins)")
async def audit_log(actor: Admin, runtime: RuntimeDep,
                    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                    page_size: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
    async with acting_transaction(runtime, actor) as (conn, _):
        items = await handlers.audit_log(conn, page_size, (page - 1) * page_size)
    return {"items": items, "page": page, "page_size": page_size}


@router.post("/offers", status_code=201, summary="Publish an offer (or save a draft)")
async def publish_offer(body: OfferIn, actor: Publisher, runtime: RuntimeDep, response: Response) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return _with_etag(response, await handlers.publish_offer(conn, acting, body))


@router.get("/offers/{offer_id}", summary="An offer this network may see (ETag: its version)")
async def get_offer(offer_id: UUID, actor: Reader, runtime: RuntimeDep, response: Response) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return _with_etag(response, await handlers.get_offer(conn, acting, offer_id))


@router.put("/offers/{offer_id}", summary="Replace an offer (If-Match: 412 when someone changed it meanwhile)")
async def change_offer(offer_id: UUID, body: OfferIn, actor: Publisher, runtime: RuntimeDep, response: Response,
                       if_match: IfMatch = None) -> dict:
    version = expected_version(if_match)
    async with acting_transaction(runtime, actor) as (conn, acting):
        return _with_etag(response, await handlers.change_offer(conn, acting, offer_id, body, version))


@router.post("/offers/{offer_id}/withdraw", summary="Withdraw an offer")
async def withdraw_offer(offer_id: UUID, actor: Publisher, runtime: RuntimeDep, response: Response,
                         if_match: IfMatch = None) -> dict:
    version = expected_version(if_match)
    async with acting_transaction(runtime, actor) as (conn, acting):
        return _with_etag(response, await handlers.withdraw_offer(conn, acting, offer_id, version))


IMPORT_MAX_BYTES = 512 * 1024 * 1024  # a national provider's export is large; it is spooled to disk, never held
# The national course search's JSON is parsed whole (it answers in pages of a few hundred termine,
# about 12 KiB each): Python's objects take up to 50 times the text, so its bound is far lower.
WBSUCHE_MAX_BYTES = 8 * 1024 * 1024
# Imports one catalog process runs at once: each holds a database connection and a transaction for
# its whole file, and the pool's ten connections also serve every other request and the events.
IMPORTS_AT_ONCE = 2


@asynccontextmanager
async def _import_slot(request: Request) -> AsyncIterator[None]:
    """One of the process's import slots, or a 503 at once (the client tries again later)."""
    slots: asyncio.Semaphore = request.app.state.import_slots
    if slots.locked():
        raise Problem(503, "Busy", f"{IMPORTS_AT_ONCE} imports are running here; please try again in a minute.",
                      headers={"Retry-After": "60"})
    async with slots:
        yield


async def _spool(request: Request, limit: int = IMPORT_MAX_BYTES) -> tempfile.SpooledTemporaryFile:
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            spool.close()
            raise Problem(413, "Payload too large", f"This import may be at most {limit // 2**20} MiB.")
        spool.write(chunk)
    spool.seek(0)
    return spool


@dataclass(frozen=True)
class ImportOptions:
    """How imported offers arrive: published or as drafts, seen at home or by all networks."""

    status: Annotated[str, Query(pattern="^(published|draft)$")] = "published"
    scope: Annotated[str, Query(pattern="^(home|all)$", description="visibility of imported offers")] = "home"


ImportOptionsDep = Annotated[ImportOptions, Depends()]


async def _import(runtime: ServiceRuntime, actor: Actor, provider_id: UUID, records, options: ImportOptions) -> dict:
    async with acting_transaction(runtime, actor) as (conn, acting):
        return await importing.import_catalogue(
            conn, acting, provider_id, records, status=options.status,
            visibility={"scope": options.scope, "networks": []})


@router.post(
    "/imports/openqcat", summary="Import a provider's open-Qcat 1.1 catalogue (body: the XML)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/xml": {"schema": {
        "type": "string", "format": "binary"}}}}},
)
@route_policy(max_body=IMPORT_MAX_BYTES, rate="30/minute")
async def import_openqcat(request: Request, actor: Publisher, runtime: RuntimeDep, provider_id: UUID,
                          options: ImportOptionsDep) -> dict:
    """NEW_CATALOG replaces the provider's catalogue, UPDATE_CATALOG applies DELETE then NEW. The
    answer reports created, updated, deleted and every rejected record with its place and reason."""
    spool = await _spool(request)  # before a slot: a slow upload holds no connection, so it takes none
    try:
        async with _import_slot(request):
            return await _import(runtime, actor, provider_id, openqcat.reader(spool), options)
    except openqcat.UnreadableFile as exc:
        raise Problem(422, "Unreadable import", f"The file cannot be imported: {exc}",
                      errors=[{"field": "body", "message": str(exc), "type": "openqcat"}]) from None
    finally:
        spool.close()


@router.post(
    "/imports/wbsuche", summary="Import courses in the national course search's JSON (_embedded.termine)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
@route_policy(max_body=WBSUCHE_MAX_BYTES, rate="30/minute")
async def import_wbsuche(request: Request, actor: Publisher, runtime: RuntimeDep, provider_id: UUID,
                         options: ImportOptionsDep) -> dict:
    """Each angebot becomes (or updates) an offer, each termin a dated session; nothing is deleted."""
    spool = await _spool(request, WBSUCHE_MAX_BYTES)
    try:  # the checks every other JSON body gets from the request guard (NaN, depth, surrogates);
        # on a thread: parsing megabytes would hold up every other request of the process
        document = await asyncio.to_thread(strict_json, spool.read())
    except UnsafeJson as exc:
        raise Problem(422, "Invalid request", "The body is not valid JSON.",
                      errors=[{"field": "body", "message": str(exc), "type": "json_invalid"}]) from None
    finally:
        spool.close()
    try:
        async with _import_slot(request):
            return await _import(runtime, actor, provider_id, lambda: wbsuche.read(document), options)
    except wbsuche.UnreadableJson as exc:
        raise Problem(422, "Unreadable import", f"The document cannot be imported: {exc}",
                      errors=[{"field": "body", "message": str(exc), "type": "wbsuche"}]) from None


async def offer_query(
    q: Annotated[Text | None, Query(max_length=500, description="German full text")] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90, allow_inf_nan=False)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180, allow_inf_nan=False)] = None,
    place: Annotated[Text | None, Query(max_length=100, description="a postcode or a town, instead of lat/lon")] = None,
    radius_km: Annotated[float | None, Query(ge=25, le=200, description="as the national search: 25–200")] = None,
    format: Annotated[list[Format] | None, Query()] = None,
    schedule: Annotated[list[Schedule] | None, Query()] = None,
    qualification: Annotated[list[Qualification] | None, Query()] = None,
    start_from: Day | None = None,
    start_to: Day | None = None,
    min_hours: Annotated[float | None, Query(ge=0, le=10_000, allow_inf_nan=False)] = None,
    max_hours: Annotated[float | None, Query(ge=0, le=10_000, allow_inf_nan=False)] = None,
    max_price_eur: Annotated[float | None, Query(ge=0, le=1_000_000, allow_inf_nan=False)] = None,
    funding: Annotated[list[FundingFlag] | None, Query(description="bildungsgutschein, qcg, aufstiegsbafoeg")] = None,
    provider_id: UUID | None = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
    page: Annotated[int, Query(ge=1, le=50, description="small offsets only (a page starts at most 1,000 offers"
                                                         " in); use cursor to go deep")] = 1,
) -> store.OfferQuery:
    """The search's filters (one definition for the network's and the public search)."""
    if place is not None:
        found = places.gazetteer().locate(place, place)
        if found is None:
            raise Problem(422, "Invalid request", f"The place {place!r} is not known.",
                          errors=[{"field": "query.place", "message": "unknown postcode or town"}])
        lat, lon = found
    if (lat is None) != (lon is None):
        raise Problem(422, "Invalid request", "lat and lon go together.",
                      errors=[{"field": "query.lat", "message": "give both lat and lon"}])
    if lat is not None and radius_km is None:
        radius_km = 25.0
    if radius_km is not None and lat is None:
        raise Problem(422, "Invalid request", "radius_km needs a place (lat and lon, or place).",
                      errors=[{"field": "query.radius_km", "message": "needs lat and lon, or place"}])
    if not cursor and (page - 1) * page_size > store.MAX_SKIP:
        # Deeper, the search would give the page at its furthest start again, as if it were the next one.
        raise Problem(422, "Invalid request", f"A numbered page starts at most {store.MAX_SKIP:,} offers in;"
                      " go further with the previous page's next_cursor.",
                      errors=[{"field": "query.page",
                               "message": f"(page - 1) × page_size may be at most {store.MAX_SKIP}"}])
    try:
        after = handlers.decode_cursor(cursor) if cursor else None
    except ValueError:
        raise Problem(422, "Invalid request", "The cursor is not one this search gave.",
                      errors=[{"field": "query.cursor", "message": "unknown cursor"}]) from None
    return store.OfferQuery(
        q=q, lat=lat, lon=lon, radius_km=radius_km, formats=[f.value for f in format or []] or None,
        schedules=[x.value for x in schedule or []] or None,
        qualifications=[x.value for x in qualification or []] or None, start_from=start_from, start_to=start_to,
        min_hours=min_hours, max_hours=max_hours, max_price_eur=max_price_eur,
        funding=[f.value for f in funding or []] or None, provider_id=provider_id, page_size=page_size,
        after=after, skip=0 if after else (page - 1) * page_size,
    )


QueryDep = Annotated[store.OfferQuery, Depends(offer_query)]


@router.get("/offers", summary="Search the offers this network may see (ranked; facets; keyset cursor)")
async def search_offers(actor: Reader, runtime: RuntimeDep, query: QueryDep,
                        facets: Annotated[bool, Query(description="count by format, schedule, funding, …")] = False,
                        ) -> Response:
    # Only writes ask whom the actor acts for (the owner policies are for INSERT, UPDATE and DELETE):
    # a search reads what the whole network sees, so it skips that round trip to the memberships.
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        # The page is plain JSON already: FastAPI's generic encoding of 20 offers took 1.6 ms, the
        # standard library's json 0.13 ms, orjson 0.01 ms.
        body = await handlers.search_offers(conn, query, with_facets=facets)
    return Response(orjson.dumps(body), media_type="application/json")


# ---- the public network view: no login, published and visible only, cacheable, rate-limited ----

public = APIRouter(prefix="/v1/public/{tenant}", tags=["public"])
# Per client: the whole public view, and one page hammered (CatalogSettings.rate_limit_public*).
# Counted in the runtime's Redis-backed limits, so every catalog process shares them. The client is
# the visitor's address the portal forwards (X-Forwarded-For, honoured from addresses uvicorn trusts:
# FORWARDED_ALLOW_IPS, 127.0.0.1 by default), else the connection's.
PUBLIC_MAX_AGE = 60


async def _public_tenant(tenant: Annotated[str, Path(pattern=TENANT_SLUG)], request: Request,
                         runtime: RuntimeDep) -> str:
    client = request.client.host if request.client else "unknown"
    for limit, key in zip(request.app.state.public_limits, ("all", str(request.url)), strict=True):
        if wait := await request.app.state.rate_limits.retry_after(limit, "public", client, key):
            raise Problem(429, "Too many requests", "Please wait a moment and ask again.",
                          headers={"Retry-After": str(wait)})
    if not await runtime.tenant_exists(tenant):
        raise Problem(404, "Not found", "There is no such network.")
    return tenant


PublicTenant = Annotated[str, Depends(_public_tenant)]


def _cacheable(request: Request, body: dict) -> Response:
    payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)  # byte for byte json.dumps(sort_keys) at 1/8 of its cost
    tag = '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": f"public, max-age={PUBLIC_MAX_AGE}"}
    if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type="application/json", headers=headers)


@public.get("/offers", summary="Published offers a network shows the public (no login)")
async def public_offers(tenant: PublicTenant, request: Request, runtime: RuntimeDep, query: QueryDep,
                        facets: bool = False) -> Response:
    async with tenant_transaction(runtime.pool, tenant) as conn:
        body = await handlers.search_offers(conn, query, with_facets=facets, public=True)
    return _cacheable(request, body)


@public.get("/offers/{offer_id}", summary="One published offer a network shows (no login)")
async def public_offer(tenant: PublicTenant, offer_id: UUID, request: Request, runtime: RuntimeDep) -> Response:
    async with tenant_transaction(runtime.pool, tenant) as conn:
        body = await handlers.public_offer(conn, offer_id)
    return _cacheable(request, body)


@public.get("/providers", summary="The network's education providers and their published offers (no login)")
async def public_providers(tenant: PublicTenant, request: Request, runtime: RuntimeDep) -> Response:
    async with tenant_transaction(runtime.pool, tenant) as conn:
        body = await handlers.public_providers(conn)
    return _cacheable(request, body)
