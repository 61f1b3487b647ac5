"""Notifications HTTP routes: the delivery log, preferences, employers' offer alerts and one-click
unsubscribe.

Owners below the tenant: a provider user acts only for the providers it belongs to (its token's
``providers`` claim, or its ``sub`` in the provider's ``members`` from catalog.providers.v1);
network admins (and an operator in a network) act for the whole network. The code checks it, and
row-level security holds it too (``app.acting_providers``, see migration 0002).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import EmailStr

from runtime.db import tenant_transaction
from runtime.http import Actor, Problem, RuntimeDep, require_roles
from runtime.models import Text
from services.notifications import store, unsubscribe
from services.notifications.domain import EmployerAlert, Preference
from services.notifications.mail import render_page

router = APIRouter(prefix="/v1", tags=["notifications"])

ProviderSide = Annotated[Actor, require_roles("provider", "network_admin", "operator")]
EmployerSide = Annotated[Actor, require_roles("employer")]


def claimed_providers(actor: Actor) -> set[str]:
    """The token's ``providers`` claim (``Principal.providers``, and the raw claim where a runtime
    without that field is running)."""
    claimed = set(getattr(actor.principal, "providers", None) or ())
    raw = actor.principal.claims.get("providers")
    if isinstance(raw, list):
        claimed |= set(raw)
    return {p for p in claimed if isinstance(p, str)}


async def acting_for(conn, actor: Actor) -> set[uuid.UUID] | None:
    """None: the whole network. Otherwise the providers this user acts for; the transaction's
    row-level security is narrowed to them."""
    if actor.has_any("network_admin", "operator"):
        return None
    providers = set(await store.providers_with_member(conn, actor.principal.subject))
    for claimed in claimed_providers(actor):
        try:
            providers.add(uuid.UUID(claimed))
        except ValueError:
            continue
    await store.act_for_providers(conn, providers)
    return providers


def _not_found(provider_id: uuid.UUID) -> Problem:
    return Problem(404, "Not found", f"No provider {provider_id} you act for in this network.")


@router.get("/deliveries", summary="Delivery log, newest first, with every attempt: the network's for its "
                                   "admins, a provider user's own providers' otherwise")
async def list_deliveries(
    actor: ProviderSide,
    runtime: RuntimeDep,
    status: Annotated[Literal["pending", "sent", "failed", "suppressed", "cancelled", "digested"] | None,
                      Query()] = None,
    provider_id: uuid.UUID | None = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        scope = await acting_for(conn, actor)
        if provider_id is not None and scope is not None and provider_id not in scope:
            raise _not_found(provider_id)  # an empty list would hide that the filter names another's provider
        items = await store.list_deliveries(conn, limit=page_size, offset=(page - 1) * page_size,
                                            status=status, provider_id=provider_id)
    return {"items": items, "page": page, "page_size": page_size}


def _preference_view(provider: dict, row, addresses) -> dict:
    return {
        "provider_id": str(provider["id"]),
        "emails": list(provider["emails"]),
        "mode": row["mode"] if row else "instant",
        "digest_hour": row["digest_hour"] if row else 7,
        "digest_weekday": row["digest_weekday"] if row else 1,
        "offer_ids": [str(o) for o in row["offer_ids"]] if row else [],
        "topics": list(row["topics"]) if row else [],
        "addresses": [{"address": a["address"], "mode": a["mode"], "digest_hour": a["digest_hour"],
                       "digest_weekday": a["digest_weekday"]} for a in addresses],
        "updated_at": row["updated_at"].isoformat() if row else None,
    }


async def _provider_in_scope(conn, actor: Actor, provider_id: uuid.UUID):
    scope = await acting_for(conn, actor)
    provider = await store.get_provider(conn, provider_id)
    if provider is None or (scope is not None and provider_id not in scope):
        raise _not_found(provider_id)
    return provider


@router.get("/preferences/{provider_id}", summary="A provider's notifications: how, when and about what")
async def get_preference(provider_id: uuid.UUID, actor: ProviderSide, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        provider = await _provider_in_scope(conn, actor, provider_id)
        row = await store.get_preference(conn, provider_id)
        addresses = await store.address_choices(conn, "provider", str(provider_id))
    return _preference_view(provider, row, addresses)


@router.put("/preferences/{provider_id}",
            summary="Set a provider's notifications: instant, daily or weekly digest (Europe/Berlin hour), or off; "
                    "which offers or topics; per contact address")
async def put_preference(
    provider_id: uuid.UUID, body: Preference, actor: ProviderSide, runtime: RuntimeDep,
) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        provider = await _provider_in_scope(conn, actor, provider_id)
        known = {e.lower() for e in provider["emails"]}
        unknown = [a.address for a in body.addresses if a.address.lower() not in known]
        if unknown:
            raise Problem(422, "Unknown address", "Only the provider's contact addresses can have their own choice.",
                          errors=[{"field": "addresses", "message": f"not a contact address of this provider: {a}"}
                                  for a in unknown])
        await store.set_preference(conn, provider_id, actor.tenant, body)
        row = await store.get_preference(conn, provider_id)
        addresses = await store.address_choices(conn, "provider", str(provider_id))
    return _preference_view(provider, row, addresses)


# --- employers: alerts about good new offers for their open demand --------------------------------

def employer_owner(actor: Actor) -> str:
    """A demand's owner: the employer's firm, or the user itself without one (TEAM contract 3)."""
    firm = getattr(actor.principal, "firm", None) or actor.principal.claims.get("firm")
    return firm if isinstance(firm, str) and firm else actor.principal.subject


def _alert_view(row) -> dict:
    return {"address": row["address"], "mode": row["mode"], "digest_hour": row["digest_hour"],
            "digest_weekday": row["digest_weekday"], "min_score": row["min_score"] or 0.0}


@router.get("/employer-alerts", summary="The employer's opt-ins to mail about good new offers for its demand")
async def list_employer_alerts(actor: EmployerSide, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        rows = await store.address_choices(conn, "employer", employer_owner(actor))
    return {"items": [_alert_view(r) for r in rows]}


@router.put("/employer-alerts", summary="Opt an address in (instant, daily, weekly) or out (off)")
async def put_employer_alert(body: EmployerAlert, actor: EmployerSide, runtime: RuntimeDep) -> dict:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        row = await store.set_address_choice(conn, actor.tenant, "employer", employer_owner(actor), body.address,
                                             body.mode, body.digest_hour, body.digest_weekday, body.min_score)
    return _alert_view(row)


@router.delete("/employer-alerts", status_code=204, summary="Stop alerts to an address")
async def delete_employer_alert(address: Annotated[EmailStr, Query()], actor: EmployerSide,
                                runtime: RuntimeDep) -> None:
    async with tenant_transaction(runtime.pool, actor.tenant) as conn:
        if not await store.delete_address_choice(conn, "employer", employer_owner(actor), address):
            raise Problem(404, "Not found", "No alerts to this address.")


# --- one-click unsubscribe (RFC 8058), without login ------------------------------------------------

_INVALID = ("Link ungültig", "Dieser Abmeldelink ist ungültig oder unvollständig. Bitte verwenden Sie den "
                             "vollständigen Link aus einer aktuellen E-Mail. Es wurde nichts geändert.")


# A person opens these links in a browser: even a broken link answers with a German page.
_HTML = {"text/html": {"schema": {"type": "string"}}}
_HTML_PAGES = {200: {"description": "A page for the recipient", "content": _HTML},
               404: {"description": "The link is invalid: a page saying so", "content": _HTML}}


def _page(title: str, text: str, status: int = 200, action: str | None = None) -> HTMLResponse:
    return HTMLResponse(render_page(title=title, text=text, action=action), status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.get("/unsubscribe", response_class=HTMLResponse, responses=_HTML_PAGES,
            summary="The unsubscribe link of a mail: a page with a button; changes nothing (RFC 8058)")
async def unsubscribe_page(request: Request, token: Annotated[Text, Query(min_length=16, max_length=600)],
                           runtime: RuntimeDep) -> HTMLResponse:
    recipient = unsubscribe.verify(runtime.settings.signing_secret(), token)
    if recipient is None:
        return _page(*_INVALID, status=404)
    return _page("Benachrichtigungen abbestellen",
                 f"Möchten Sie, dass an {recipient.address} keine E-Mails mehr aus dem Bildungsraum über "
                 "passende Bedarfe und Angebote gehen? Mit dem Knopf bestellen Sie sie ab.",
                 action=f"{request.url.path}?{request.url.query}")


@router.post("/unsubscribe", response_class=HTMLResponse, responses=_HTML_PAGES,
             summary="One-click unsubscribe (RFC 8058 List-Unsubscribe-Post), also the page's button")
async def unsubscribe_now(token: Annotated[Text, Query(min_length=16, max_length=600)],
                          runtime: RuntimeDep) -> HTMLResponse:
    recipient = unsubscribe.verify(runtime.settings.signing_secret(), token)
    if recipient is None:
        return _page(*_INVALID, status=404)
    async with tenant_transaction(runtime.pool, recipient.tenant) as conn:
        await store.unsubscribe_address(conn, recipient.tenant, recipient.owner_kind, recipient.owner_id,
                                        recipient.address)
    return _page("Benachrichtigungen abbestellt",
                 f"An {recipient.address} gehen keine E-Mails mehr aus dem Bildungsraum über passende Bedarfe "
                 "und Angebote. Sie können die Benachrichtigungen jederzeit in Ihren Einstellungen im Portal "
                 "wieder einschalten.")
