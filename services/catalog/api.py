"""Catalog HTTP routes: parse, call a handler, shape the answer."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from runtime.db import tenant_transaction
from runtime.http import Actor, Problem, RuntimeDep, require_roles
from runtime.models import Text
from services.catalog import handlers, store
from services.catalog.domain import Format, OfferIn, ProviderIn, Qualification, Schedule

router = APIRouter(prefix="/v1", tags=["catalog"])

Publisher = Annotated[Actor, require_roles("provider", "network_admin", "operator")]
Reader = Annotated[Actor, require_roles("provider", "network_admin", "operator", "counselor", "employer")]


@router.post("/providers", status_code=201, summary="Register an education provider")
async def register_provider(body: ProviderIn, actor: Publisher, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return await handlers.register_provider(conn, actor.tenant, body)


@router.get("/providers/{provider_id}", summary="A provider of this network")
async def get_provider(provider_id: UUID, actor: Reader, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await store.get_provider(conn, provider_id)
    if row is None:
        raise Problem(404, "Not found", f"No provider {provider_id} in this network.")
    return store.provider_state(row)


@router.put("/providers/{provider_id}", summary="Change a provider")
async def change_provider(provider_id: UUID, body: ProviderIn, actor: Publisher, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return await handlers.change_provider(conn, actor.tenant, provider_id, body)


@router.post("/offers", status_code=201, summary="Publish an offer (or save a draft)")
async def publish_offer(body: OfferIn, actor: Publisher, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return await handlers.publish_offer(conn, actor.tenant, body)


@router.get("/offers/{offer_id}", summary="An offer this network may see")
async def get_offer(offer_id: UUID, actor: Reader, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await store.get_offer(conn, offer_id)
    if row is None:
        raise Problem(404, "Not found", f"No offer {offer_id} visible to this network.")
    return store.offer_state(row)


@router.put("/offers/{offer_id}", summary="Replace an offer of this network")
async def change_offer(offer_id: UUID, body: OfferIn, actor: Publisher, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return await handlers.change_offer(conn, actor.tenant, offer_id, body)


@router.post("/offers/{offer_id}/withdraw", summary="Withdraw an offer")
async def withdraw_offer(offer_id: UUID, actor: Publisher, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return await handlers.withdraw_offer(conn, actor.tenant, offer_id)


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
