"""Notifications HTTP routes: the delivery log, preferences and one-click unsubscribe."""

from __future__ import annotations

import html
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from runtime.db import system_transaction, tenant_transaction
from runtime.http import Actor, Problem, RuntimeDep, require_roles
from runtime.models import Text
from services.notifications import store
from services.notifications.domain import Preference

router = APIRouter(prefix="/v1", tags=["notifications"])

LogReader = Annotated[Actor, require_roles("provider", "network_admin", "operator")]
PreferenceEditor = Annotated[Actor, require_roles("provider", "network_admin", "operator")]


def _own_provider(actor: Actor, provider_id: uuid.UUID) -> None:
    """A provider user whose token names its provider acts for that provider only."""
    claimed = actor.principal.claims.get("provider_id")
    if actor.principal.roles == {"provider"} and claimed and claimed != str(provider_id):
        raise Problem(403, "Forbidden", "A provider manages its own preferences only.")


@router.get("/deliveries", summary="Delivery log of the acting tenant, newest first, with every attempt")
async def list_deliveries(
    actor: LogReader,
    runtime: RuntimeDep,
    status: Annotated[Literal["pending", "sent", "failed", "suppressed", "cancelled"] | None, Query()] = None,
    provider_id: uuid.UUID | None = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict:
    claimed = actor.principal.claims.get("provider_id")
    if actor.principal.roles == {"provider"} and claimed:
        if provider_id and str(provider_id) != claimed:
            raise Problem(403, "Forbidden", "A provider sees its own deliveries only.")
        provider_id = uuid.UUID(claimed)
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        items = await store.list_deliveries(conn, limit=page_size, offset=(page - 1) * page_size,
                                            status=status, provider_id=provider_id)
    return {"items": items, "page": page, "page_size": page_size}


def _preference_view(provider_id: uuid.UUID, row) -> dict:
    return {"provider_id": str(provider_id), "mode": row["mode"] if row else "instant",
            "updated_at": row["updated_at"].isoformat() if row else None}


@router.get("/preferences/{provider_id}", summary="A provider's notification preference")
async def get_preference(provider_id: uuid.UUID, actor: PreferenceEditor, runtime: RuntimeDep) -> dict:
    _own_provider(actor, provider_id)
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        if await store.get_provider(conn, provider_id) is None:
            raise Problem(404, "Not found", f"No provider {provider_id} in this network.")
        row = await conn.fetchrow("SELECT * FROM preferences WHERE provider_id = $1", provider_id)
    return _preference_view(provider_id, row)


@router.put("/preferences/{provider_id}", summary="Set a provider's notifications: instant or off")
async def put_preference(
    provider_id: uuid.UUID, body: Preference, actor: PreferenceEditor, runtime: RuntimeDep,
) -> dict:
    _own_provider(actor, provider_id)
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        if await store.get_provider(conn, provider_id) is None:
            raise Problem(404, "Not found", f"No provider {provider_id} in this network.")
        row = await store.set_preference(conn, provider_id, actor.tenant, body.mode)
    return _preference_view(provider_id, row)


_PAGE = """<!DOCTYPE html><html lang="de"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family:Arial,Helvetica,sans-serif;max-width:560px;margin:3em auto;color:#1a1a1a">
<h1 style="font-size:1.4em">{title}</h1><p>{text}</p></body></html>"""


async def _unsubscribe(runtime, token: str) -> HTMLResponse:
    async with system_transaction(runtime.pool) as conn:
        row = await store.unsubscribe(conn, token)
    if row is None:
        raise Problem(404, "Unknown unsubscribe token",
                      "Dieser Abmeldelink ist ungültig. Bitte verwenden Sie den Link aus einer aktuellen E-Mail.")
    who = html.escape(row["provider_name"] or "Ihr Angebot")
    return HTMLResponse(_PAGE.format(
        title="Benachrichtigungen abbestellt",
        text=f"{who} erhält keine E-Mails mehr über passende Nachfragen im Bildungsraum. "
             "Sie können die Benachrichtigungen jederzeit in Ihren Einstellungen wieder einschalten.",
    ))


@router.api_route("/unsubscribe", methods=["GET", "POST"], response_class=HTMLResponse,
                  summary="Unsubscribe without login: the link in a mail (GET) or one-click (POST, RFC 8058)")
async def unsubscribe(
    token: Annotated[Text, Query(min_length=16, max_length=200)], runtime: RuntimeDep,
) -> HTMLResponse:
    return await _unsubscribe(runtime, token)
