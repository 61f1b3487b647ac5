"""Identity HTTP routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from runtime.http import CurrentPrincipal, Problem, RuntimeDep
from services.identity import handlers
from services.identity.domain import CreateTenant

router = APIRouter(prefix="/v1", tags=["identity"])


@router.get("/me", summary="Who the token says I am")
async def me(principal: CurrentPrincipal) -> dict:
    return {"sub": principal.subject, "username": principal.username, "email": principal.email,
            "roles": sorted(principal.roles), "tenant": principal.tenant}


@router.get("/tenants", summary="Tenants: all for an operator, one's own network otherwise")
async def list_tenants(principal: CurrentPrincipal, runtime: RuntimeDep) -> dict:
    if not principal.is_operator and principal.tenant is None:
        raise Problem(403, "Forbidden", "The token names no tenant.")
    async with runtime.pool.acquire() as conn:
        items = await handlers.list_tenants(conn, None if principal.is_operator else principal.tenant)
    return {"items": items}


@router.post("/tenants", status_code=201, summary="Add a regional network (operator)")
async def create_tenant(body: CreateTenant, principal: CurrentPrincipal, runtime: RuntimeDep) -> dict:
    if not principal.is_operator:
        raise Problem(403, "Forbidden", "Only an operator adds tenants.")
    async with runtime.pool.acquire() as conn, conn.transaction():
        return await handlers.create_tenant(conn, body)


@router.get("/public/tenants", summary="The active networks, for public pages (no sign-in)")
async def public_tenants(runtime: RuntimeDep) -> dict:
    async with runtime.pool.acquire() as conn:
        items = await handlers.list_tenants(conn, None)
    return {"items": [{"id": t["id"], "name": t["name"]} for t in items if t["status"] == "active"]}


@router.get("/public/tenants/{tenant_id}", summary="A network's public face: name (no sign-in)")
async def public_tenant(tenant_id: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")],
                        runtime: RuntimeDep) -> dict:
    async with runtime.pool.acquire() as conn:
        items = await handlers.list_tenants(conn, tenant_id)
    if not items or items[0]["status"] != "active":
        raise Problem(404, "Not found", "No such network.")
    return {"id": items[0]["id"], "name": items[0]["name"]}
