"""Catalog HTTP routes: parse, call a handler, shape the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Header, Query, Response

from runtime.db import tenant_transaction
from runtime.http import Actor, Problem, RuntimeDep, require_roles
from runtime.models import Text
from runtime.service import ServiceRuntime
from services.catalog import handlers, store
from services.catalog.domain import (
    Acting,
    Format,
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
        subject = actor.principal.subject
        if actor.has_any(*NETWORK_WIDE):
            acting = Acting(actor.tenant, subject, None)
        else:
            acting = Acting(actor.tenant, subject,
                            actor.principal.providers | await store.member_provider_ids(conn, subject))
        await store.set_acting(conn, acting)
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


@router.get("/offers", summary="Search the offers this network may see")
async def search_offers(
    actor: Reader,
    runtime: RuntimeDep,
    q: Annotated[Text | None, Query(max_length=500, description="German full text")] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    radius_km: Annotated[float | None, Query(ge=25, le=200, description="as the national search: 25–200")] = None,
    format: Annotated[list[Format] | None, Query()] = None,
    schedule: Annotated[list[Schedule] | None, Query()] = None,
    qualification: Annotated[list[Qualification] | None, Query()] = None,
    start_from: date | None = None,
    start_to: date | None = None,
    max_price_eur: Annotated[float | None, Query(ge=0)] = None,
    funding: Annotated[list[Text] | None, Query(description="bildungsgutschein, qcg, aufstiegsbafoeg")] = None,
    provider_id: UUID | None = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict:
    if radius_km is not None and (lat is None or lon is None):
        raise Problem(422, "Invalid request", "radius_km needs lat and lon.",
                      errors=[{"field": "query.radius_km", "message": "needs lat and lon"}])
    bad_funding = [f for f in funding or [] if f not in ("bildungsgutschein", "qcg", "aufstiegsbafoeg")]
    if bad_funding:
        raise Problem(422, "Invalid request", "Unknown funding.",
                      errors=[{"field": "query.funding", "message": f"unknown: {', '.join(bad_funding)}"}])
    query = store.OfferQuery(
        q=q, lat=lat, lon=lon, radius_km=radius_km, formats=[f.value for f in format or []] or None,
        schedules=[s.value for s in schedule or []] or None,
        qualifications=[x.value for x in qualification or []] or None, start_from=start_from,
        start_to=start_to, max_price_eur=max_price_eur, funding=funding, provider_id=provider_id,
        page=page, page_size=page_size,
    )
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        rows, total = await store.search_offers(conn, query)
    return {"items": [store.offer_state(r) | {"rank": round(float(r["rank"]), 6)} for r in rows],
            "page": page, "page_size": page_size, "total": total}
