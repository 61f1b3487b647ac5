"""Matching HTTP routes. Who may call which is the rule table in authz.py: an employer reaches only its
firm's demands, counsellors and network admins the whole network's; a provider user sees the open
demands matched to its own providers' offers."""

from __future__ import annotations

import csv
import io
import time
from datetime import date, timedelta
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from runtime.authz import Authorized, Reach
from runtime.db import tenant_transaction
from runtime.http import Problem, RuntimeDep, server_timing
from runtime.models import Day
from services.matching import handlers, insights, store
from services.matching.authz import RULES
from services.matching.domain import DemandIn
from services.matching.index import from_bytes

router = APIRouter(prefix="/v1", tags=["matching"])

Acting = Annotated[Authorized, Depends(RULES.actor)]
PAGE_SIZE = 20


def _not_found(demand_id: UUID) -> Problem:
    return Problem(404, "Not found", f"No demand {demand_id} in this network.")


def _owns(actor: Authorized, row) -> bool:
    return actor.reach >= Reach.TENANT or row["owner"] == actor.owner


async def _own_demand(conn, actor: Authorized, demand_id: UUID, *, lock: bool = False):
    """The demand if the actor may reach it; another firm's demand is as if it did not exist."""
    row = await store.get_demand(conn, demand_id, lock=lock)
    if row is None or row["tenant_id"] != actor.tenant or not _owns(actor, row):
        raise _not_found(demand_id)
    return row


def _check_window(body: DemandIn) -> None:
    if body.start_to < date.today():
        raise Problem(422, "Invalid request", "The start window lies in the past.", errors=[
            {"field": "body.start_to", "message": "must not lie in the past", "type": "value_error"}])


def _firm(actor: Authorized) -> str | None:
    return actor.owner if actor.reach == Reach.OWN else None


@router.post("/demands", status_code=201, summary="Open a qualification demand; it is matched at once")
async def open_demand(body: DemandIn, actor: Acting, runtime: RuntimeDep, response: Response) -> dict:
    _check_window(body)
    started = time.perf_counter()
    vector = await handlers.encode_demand(body.model_dump(mode="json"))
    encoded = time.perf_counter()
    try:
        async with tenant_transaction(runtime.pool, actor.tenant) as conn:
            demand = await handlers.open_demand(conn, actor.tenant, body, actor.principal.subject,
                                                firm=_firm(actor), whole_network=actor.whole_tenant, vector=vector)
            matched = time.perf_counter()
    except handlers.Refused as exc:
        raise Problem(403, "Forbidden", str(exc)) from None
    # where the request's time went, for its caller (and the benchmark) to see
    response.headers["Server-Timing"] = server_timing(
        {"encode": encoded - started, "match": matched - encoded, "commit": time.perf_counter() - matched})
    return demand


@router.get("/demands", summary="Demands of this network (an employer: its firm's), newest first")
async def list_demands(actor: Acting, runtime: RuntimeDep,
                       status: Annotated[Literal["open", "closed"] | None, Query()] = None,
                       page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                       page_size: Annotated[int, Query(ge=1, le=100)] = PAGE_SIZE) -> dict:
    owner = None if actor.whole_tenant else actor.owner
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        rows = await store.list_demands(conn, owner, status, page_size, (page - 1) * page_size)
    return {"items": [r["state"] for r in rows], "page": page, "page_size": page_size}


@router.get("/demands/{demand_id}", summary="A demand")
async def get_demand(demand_id: UUID, actor: Acting, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        return (await _own_demand(conn, actor, demand_id))["state"]


@router.put("/demands/{demand_id}", summary="Change a demand; it is matched again at once")
async def change_demand(demand_id: UUID, body: DemandIn, actor: Acting, runtime: RuntimeDep) -> dict:
    _check_window(body)
    vector = await handlers.encode_demand(body.model_dump(mode="json"))
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await _own_demand(conn, actor, demand_id)
        try:
            return await handlers.change_demand(conn, actor.tenant, row, body, whole_network=actor.whole_tenant,
                                                vector=vector)
        except handlers.Refused as exc:
            raise Problem(409 if row["status"] != "open" else 403,
                          "Conflict" if row["status"] != "open" else "Forbidden", str(exc)) from None


@router.post("/demands/{demand_id}/close", summary="Close a demand; its matches are retracted")
async def close_demand(demand_id: UUID, actor: Acting, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        await _own_demand(conn, actor, demand_id)
        return await handlers.close_demand(conn, actor.tenant, demand_id)


def _match_item(r) -> dict:
    offer = r["offer"] or {}
    return {"offer_id": str(r["offer_id"]), "external_id": r["external_id"], "title": r["title"],
            "provider_id": str(r["provider_id"] or r["offer_provider"]), "tenant": offer.get("tenant"),
            "score": r["score"], "reasons": r["reasons"]}


@router.get("/demands/{demand_id}/matches", summary="The announced matches, best first")
async def list_matches(demand_id: UUID, actor: Acting, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        await _own_demand(conn, actor, demand_id)
        rows = await store.active_matches(conn, demand_id)
    return {"items": [_match_item(r) for r in rows]}


def _offer_item(ranked, state: dict | None) -> dict:
    state = state or {}
    return {"offer_id": ranked.offer_id, "external_id": state.get("external_id"), "title": state.get("title"),
            "provider_id": state.get("provider_id") or ranked.provider_id or None, "tenant": state.get("tenant"),
            "score": ranked.score, "reasons": ranked.reasons,
            "offer": {k: state.get(k) for k in ("id", "tenant", "provider_id", "external_id", "title", "format",
                                                "schedule", "hours", "price_eur", "funding", "qualification")}}


@router.get("/demands/{demand_id}/offers", summary="Every feasible offer, ranked (paged)")
async def ranked_offers(demand_id: UUID, actor: Acting, runtime: RuntimeDep,
                        page: Annotated[int, Query(ge=1, le=500)] = 1,
                        page_size: Annotated[int, Query(ge=1, le=100)] = PAGE_SIZE) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await _own_demand(conn, actor, demand_id)
        if row["vector"] is None:
            return {"items": [], "page": page, "page_size": page_size, "total": 0}
        kept = await handlers.kept_page(conn, row, (page - 1) * page_size, page_size)
        if kept is not None:
            window, states, total = kept
        else:
            ranked, states, total, _ = await handlers.rank_demand(
                conn, row["state"], from_bytes(row["vector"]),
                depth=min(max(handlers.STAGE_TWO, page * page_size), handlers.DEEPEST), tail=page * page_size)
            window = ranked[(page - 1) * page_size: page * page_size]
        missing = [r.offer_id for r in window if r.offer_id not in states]
        if missing:
            states |= await store.offer_states(conn, missing)
    return {"items": [_offer_item(r, states.get(r.offer_id)) for r in window], "page": page,
            "page_size": page_size, "total": total}


@router.get("/matched-demands", summary="Open demands matched to the offers of the providers you act for")
async def matched_demands(actor: Acting, runtime: RuntimeDep,
                          page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                          page_size: Annotated[int, Query(ge=1, le=200)] = 100) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        providers = None
        if not actor.whole_tenant:
            providers = await store.providers_of(conn, actor.principal.subject, sorted(actor.principal.providers))
        rows = [] if providers == [] else await store.provider_view(conn, providers, page_size,
                                                                    (page - 1) * page_size)
    return {"items": [{"demand": r["demand"], "employer": r["employer"], "offer_id": str(r["offer_id"]),
                       "offer_title": r["offer_title"], "provider_id": str(r["provider_id"]), "score": r["score"],
                       "reasons": r["reasons"]} for r in rows],
            "page": page, "page_size": page_size}


CSV_COLUMNS = (("skill_cluster", "Themenfeld"), ("district", "Region"), ("demands", "Bedarfe"),
               ("participants", "Teilnehmende"), ("demands_without_good_match", "Ohne passendes Angebot"),
               ("offers_available", "Angebote"))


@router.get("/insights/gaps", response_model=None, responses={200: {
    "description": "The rows as JSON (`items`) or, with `format=csv` or `Accept: text/csv`, as CSV",
    "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}}}},
            summary="Unmet demand against supply per skill cluster and district (JSON or CSV)")
async def gaps(request: Request, actor: Acting, runtime: RuntimeDep,
               from_: Annotated[Day | None, Query(alias="from")] = None,
               to: Annotated[Day | None, Query()] = None,
               format: Annotated[Literal["json", "csv"] | None, Query()] = None) -> Response | dict:
    to = to or date.today()
    from_ = from_ or to - timedelta(days=365)
    if from_ > to:
        raise Problem(422, "Invalid request", "The period ends before it starts.", errors=[
            {"field": "query.from", "message": "must not lie after to", "type": "value_error"}])
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        items = await insights.gaps(conn, from_, to)
    wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    if not wants_csv:
        return {"from": from_.isoformat(), "to": to.isoformat(), "items": items}
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow([label for _, label in CSV_COLUMNS])
    for item in items:
        writer.writerow([_cell(item[key]) for key, _ in CSV_COLUMNS])
    return Response(("\ufeff" + out.getvalue()).encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="luecken-{from_}-{to}.csv"'})


def _cell(value) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text  # no formulas in spreadsheets
