"""Identity HTTP routes: who I am, tenants (operators provision them), members (network admins
invite and remove them), the audit log. Each route's rule is in services/identity/authz.py."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from runtime.auth import Principal
from runtime.authz import Authorized
from runtime.guards import route_policy
from runtime.http import Problem, RuntimeDep
from services.identity import handlers
from services.identity.authz import RULES
from services.identity.directory import Directory, DirectoryError
from services.identity.domain import CreateTenant, InviteMember, TenantSettings

router = APIRouter(prefix="/v1", tags=["identity"])

Caller = Annotated[Principal, Depends(RULES.principal)]
Admin = Annotated[Authorized, Depends(RULES.actor)]


async def get_directory(request: Request) -> Directory:
    return request.app.state.directory


DirectoryDep = Annotated[Directory, Depends(get_directory)]


@router.get("/me", summary="Who the token says I am")
async def me(principal: Caller) -> dict:
    return {"sub": principal.subject, "username": principal.username, "email": principal.email,
            "roles": sorted(principal.roles), "tenant": principal.tenant,
            "providers": sorted(principal.providers), "firm": principal.firm}


@router.get("/tenants", summary="Tenants: all for an operator, one's own network otherwise")
async def list_tenants(principal: Caller, runtime: RuntimeDep) -> dict:
    if not principal.is_operator and principal.tenant is None:
        raise Problem(403, "Forbidden", "The token names no tenant.")
    async with runtime.pool.acquire() as conn:
        items = await handlers.list_tenants(conn, None if principal.is_operator else principal.tenant)
    return {"items": items}


@router.post("/tenants", status_code=201, summary="Provision a regional network (operator)")
@route_policy(rate="10/minute")
async def create_tenant(body: CreateTenant, principal: Caller, runtime: RuntimeDep,
                        directory: DirectoryDep) -> dict:
    return await handlers.provision_tenant(runtime.pool, directory, body, principal)


@router.put("/tenants/{tenant_id}", summary="Change a network's name, logo and legal pages")
async def change_tenant(tenant_id: str, body: TenantSettings, actor: Admin, runtime: RuntimeDep,
                        directory: DirectoryDep) -> dict:
    if tenant_id != actor.tenant:
        raise Problem(404, "Not found", "No such network here.")
    return await handlers.change_tenant(runtime.pool, directory, tenant_id, body, actor.principal)


@router.get("/members", summary="Members of the network with their roles and memberships")
async def list_members(actor: Admin, runtime: RuntimeDep, directory: DirectoryDep) -> dict:
    return {"items": await handlers.list_members(runtime.pool, directory, actor.tenant)}


@router.post("/members", status_code=201, summary="Invite a member: account, role, providers or firm")
@route_policy(rate="30/minute")
async def invite_member(body: InviteMember, actor: Admin, runtime: RuntimeDep, directory: DirectoryDep) -> dict:
    if body.role == "network_admin" and not (actor.principal.is_operator or "network_admin" in actor.principal.roles):
        raise Problem(403, "Forbidden", "Only admins make admins.")
    return await handlers.invite_member(runtime.pool, directory, actor.tenant, body, actor.principal)


@router.delete("/members/{user_id}", status_code=204, summary="Remove a member from the network")
async def remove_member(user_id: UUID, actor: Admin, runtime: RuntimeDep, directory: DirectoryDep) -> Response:
    # an account's id is a UUID (Keycloak's, and the dev issuer's): anything else never reaches the directory
    await handlers.remove_member(runtime.pool, directory, actor.tenant, str(user_id), actor.principal)
    return Response(status_code=204)


@router.get("/audit", summary="Administrative actions in the network, newest first")
async def audit(actor: Admin, runtime: RuntimeDep,
                page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                page_size: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
    items = await handlers.audit_log(runtime.pool, actor.tenant, page_size, (page - 1) * page_size)
    return {"items": items, "page": page, "page_size": page_size}


def install_directory_errors(app) -> None:
    from runtime.http import problem_response

    @app.exception_handler(DirectoryError)
    async def _directory(_: Request, exc: DirectoryError):
        if exc.status == 409:
            return problem_response(409, "Conflict", "An account with this user name or e-mail exists already.")
        # The directory (Keycloak) is down or refused: not the caller's fault.
        return problem_response(503, "Service unavailable", "The identity provider cannot be reached; try again.")


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
