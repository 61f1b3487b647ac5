"""Requests from a network's public demand form: a firm without an account states its need; the
request waits unreviewed until a counsellor (or network admin) of that network opens it as a
demand, in one transaction with the demand itself. Kept apart from the demand routes: it is the
portal's public form that needs it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from runtime.db import tenant_transaction
from runtime.http import Actor, Problem, RuntimeDep, require_roles
from services.matching import handlers
from services.matching.domain import DemandIn

router = APIRouter(prefix="/v1", tags=["demand requests"])

Reviewer = Annotated[Actor, require_roles("counselor", "network_admin", "operator")]
TenantSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
NEW_PER_HOUR = 200  # per network: a flood of anonymous requests cannot bury the counsellors' list


def _view(row) -> dict:
    return {"id": str(row["id"]), "status": row["status"], "demand": row["body"],
            "demand_id": str(row["demand_id"]) if row["demand_id"] else None,
            "created_at": row["created_at"].isoformat()}


@router.post("/public/{tenant}/demand-requests", status_code=201,
             summary="A firm without an account states its need (no login; reviewed by a counsellor)")
async def submit_request(tenant: TenantSlug, body: DemandIn, runtime: RuntimeDep) -> dict:
    if not await runtime.tenant_exists(tenant):
        raise Problem(404, "Not found", "There is no such network.")
    async with tenant_transaction(runtime.pool, tenant) as conn:
        recent = await conn.fetchval(
            "SELECT count(*) FROM demand_requests WHERE created_at > now() - interval '1 hour'")
        if recent >= NEW_PER_HOUR:
            raise Problem(429, "Too many requests", "This network receives too many requests; try again later.")
        row = await conn.fetchrow(
            "INSERT INTO demand_requests (id, tenant_id, body) VALUES ($1, $2, $3) RETURNING *",
            # No firm from the public form: who a demand belongs to is for the counsellor to say.
            uuid.uuid4(), tenant, body.model_dump(mode="json", exclude_none=True, exclude={"firm"}))
    return {"id": str(row["id"]), "status": row["status"]}


@router.get("/demand-requests", summary="The network's requests from the public form, newest first")
async def list_requests(actor: Reviewer, runtime: RuntimeDep,
                        status: Annotated[str | None, Query(pattern="^(new|opened)$")] = None,
                        page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        rows = await conn.fetch(
            "SELECT * FROM demand_requests WHERE ($1::text IS NULL OR status = $1)"
            " ORDER BY created_at DESC, id LIMIT 50 OFFSET $2", status, (page - 1) * 50)
    return {"items": [_view(r) for r in rows], "page": page}


@router.get("/demand-requests/{request_id}", summary="One request of the network")
async def get_request(request_id: uuid.UUID, actor: Reviewer, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await conn.fetchrow("SELECT * FROM demand_requests WHERE id = $1", request_id)
    if row is None:
        raise Problem(404, "Not found", f"No request {request_id} in this network.")
    return _view(row)


@router.post("/demand-requests/{request_id}/open", summary="Open the request as a demand (once)")
async def open_request(request_id: uuid.UUID, actor: Reviewer, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await conn.fetchrow("SELECT * FROM demand_requests WHERE id = $1 FOR UPDATE", request_id)
        if row is None:
            raise Problem(404, "Not found", f"No request {request_id} in this network.")
        if row["status"] == "opened":  # a second click opens nothing twice
            return _view(row)
        demand = await handlers.open_demand(conn, actor.tenant, DemandIn.model_validate(row["body"]),
                                            actor.principal.subject)
        row = await conn.fetchrow(
            "UPDATE demand_requests SET status = 'opened', demand_id = $2, opened_by = $3, updated_at = now()"
            " WHERE id = $1 RETURNING *", request_id, uuid.UUID(demand["id"]), actor.principal.subject)
    return _view(row)
