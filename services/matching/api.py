"""Matching HTTP routes."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter

from runtime.db import tenant_transaction
from runtime.http import Actor, Problem, RuntimeDep, require_roles
from services.matching import handlers, store
from services.matching.domain import DemandIn

router = APIRouter(prefix="/v1", tags=["matching"])

DemandOwner = Annotated[Actor, require_roles("employer", "counselor", "network_admin", "operator")]


@router.post("/demands", status_code=201, summary="Open a qualification demand; it is matched at once")
async def open_demand(body: DemandIn, actor: DemandOwner, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return await handlers.open_demand(conn, actor.tenant, body, actor.principal.subject)


@router.get("/demands/{demand_id}", summary="A demand of this network")
async def get_demand(demand_id: UUID, actor: DemandOwner, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await store.get_demand(conn, demand_id)
    if row is None:
        raise Problem(404, "Not found", f"No demand {demand_id} in this network.")
    return row["state"]


@router.post("/demands/{demand_id}/close", summary="Close a demand")
async def close_demand(demand_id: UUID, actor: DemandOwner, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return await handlers.close_demand(conn, actor.tenant, demand_id)


@router.get("/demands/{demand_id}/matches", summary="Offers that fit the demand, best first")
async def list_matches(demand_id: UUID, actor: DemandOwner, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        if await store.get_demand(conn, demand_id) is None:
            raise Problem(404, "Not found", f"No demand {demand_id} in this network.")
        rows = await store.active_matches(conn, demand_id)
    return {"items": [
        {"offer_id": str(r["offer_id"]), "external_id": r["external_id"], "title": r["title"],
         "provider_id": str(r["provider_id"]), "score": r["score"], "reasons": r["reasons"]}
        for r in rows
    ]}
