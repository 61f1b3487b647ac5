"""Matching use cases: open and close demands, keep the offer read model, find and retract matches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from contracts import (
    DEMAND_CLOSED,
    DEMAND_OPENED,
    DEMANDS_TOPIC,
    MATCH_FOUND,
    MATCH_RETRACTED,
    MATCHES_TOPIC,
)
from runtime.db import set_tenant
from runtime.errors import NotFound
from runtime.events import Event
from runtime.outbox import add_to_outbox
from services.matching import store
from services.matching.domain import DemandIn, evaluate

SOURCE = "matching"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _match_state(match: asyncpg.Record, demand: dict[str, Any], offer: dict[str, Any], status: str) -> dict:
    employer = demand["employer"]
    return {
        "id": str(match["id"]), "tenant": demand["tenant"], "score": match["score"], "reasons": match["reasons"],
        "status": status, "created_at": match["created_at"].isoformat(),
        "demand": {
            "id": demand["id"], "title": demand["title"], "description": demand["description"],
            "skills": demand["skills"], "participants": demand["participants"],
            "start_from": demand["start_from"], "start_to": demand["start_to"],
            "employer": {
                "name": employer["name"], "city": employer.get("city"), "employees": employer.get("employees"),
                # A provider sees the employer's contact only where the employer agreed to share it.
                "contact": employer.get("contact") if employer.get("share_contact") else None,
            },
        },
        "offer": {"id": offer["id"], "tenant": offer["tenant"], "provider_id": offer["provider_id"],
                  "external_id": offer.get("external_id"), "title": offer["title"]},
    }


async def _announce(conn: asyncpg.Connection, event_type: str, state: dict) -> None:
    await add_to_outbox(conn, MATCHES_TOPIC, Event(event_type, SOURCE, state["tenant"], state["demand"]["id"], state))


async def _reconcile(conn: asyncpg.Connection, demand: dict, offer: dict, existing: asyncpg.Record | None) -> None:
    """Bring one (demand, offer) pair's match in line with the rules: found, kept, or retracted."""
    verdict = evaluate(offer, demand) if demand["status"] == "open" else None
    if verdict is not None:
        score, reasons = verdict
        if existing is None:
            match = await store.insert_match(conn, demand["tenant"], demand["id"], offer["id"], score, reasons)
            if match is not None:
                await _announce(conn, MATCH_FOUND, _match_state(match, demand, offer, "active"))
        else:
            # Re-activation or a new score is kept quietly: the pair was announced once already.
            await store.update_match(conn, existing["id"], "active", score, reasons)
    elif existing is not None and existing["status"] == "active":
        await store.update_match(conn, existing["id"], "retracted")
        await _announce(conn, MATCH_RETRACTED, _match_state(existing, demand, offer, "retracted"))


async def _lock_tenant_matching(conn: asyncpg.Connection, tenant: str) -> None:
    """Serialise a tenant's demand openings with offer re-evaluations in that tenant. Without it a
    demand opened while an offer event is handled sees neither the other's uncommitted row, and
    that pair is never matched. Held to commit; taken in tenant order, so no deadlock."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"matching:{tenant}")


async def open_demand(conn: asyncpg.Connection, tenant: str, body: DemandIn, created_by: str) -> dict:
    await _lock_tenant_matching(conn, tenant)
    demand = {"id": str(uuid.uuid4()), "tenant": tenant, "status": "open", "updated_at": _now(),
              **body.model_dump(mode="json")}
    await store.insert_demand(conn, demand, created_by)
    await add_to_outbox(conn, DEMANDS_TOPIC, Event(DEMAND_OPENED, SOURCE, tenant, demand["id"], demand))
    for offer in await store.candidate_offers(conn, tenant, demand):
        await _reconcile(conn, demand, offer, None)
    return demand


async def close_demand(conn: asyncpg.Connection, tenant: str, demand_id: uuid.UUID) -> dict:
    row = await store.get_demand(conn, demand_id)
    if row is None or row["tenant_id"] != tenant:
        raise NotFound(f"demand {demand_id}")
    demand = row["state"]
    if demand["status"] == "closed":
        return demand
    demand = demand | {"status": "closed", "updated_at": _now()}
    await store.close_demand(conn, demand_id, demand)
    await add_to_outbox(conn, DEMANDS_TOPIC, Event(DEMAND_CLOSED, SOURCE, tenant, demand["id"], demand))
    return demand


async def offer_changed(conn: asyncpg.Connection, event: Event) -> None:
    """An offer was published, changed or withdrawn: keep its state and re-evaluate every open
    demand of every network; networks that can no longer see it get their matches retracted."""
    offer = event.data
    await set_tenant(conn, offer["tenant"])
    if not await store.upsert_offer(conn, offer):
        return  # an older version arrived late: the newer one was evaluated already
    tenants = [r["id"] for r in await conn.fetch("SELECT id FROM known_tenants WHERE status = 'active'")]
    for tenant in sorted(set(tenants) | {offer["tenant"]}):
        await _lock_tenant_matching(conn, tenant)
        await set_tenant(conn, tenant)
        existing = await store.matches_of_offer(conn, tenant, uuid.UUID(offer["id"]))
        for demand in await store.open_demands(conn, tenant):
            await _reconcile(conn, demand, offer, existing.get(demand["id"]))
