"""Each network's public site (no sign-in): course search with filters, facets and paging, an
offer's page with JSON-LD and its dates as iCalendar, the provider directory, the imprint, and
the public demand form of the network."""

from __future__ import annotations

import logging
import math
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from services.portal import demand_form, domain
from services.portal.backends import BackendMissing, BackendNotFound
from services.portal.security import checked_form
from services.portal.web import Portal, PortalDep, SessionDep, error_page, redirect, render

log = logging.getLogger(__name__)
router = APIRouter()
PAGE_SIZE = 20
TenantSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]


async def _network(portal: Portal, tenant: str) -> dict:
    info = await portal.tenant(tenant)
    if info is None:
        raise BackendNotFound("identity", 404, None)
    return info


async def _providers(portal: Portal, tenant: str) -> dict[str, dict]:
    """The network's providers by id (for names beside offers), kept a minute (``Portal.providers``)."""
    async def fetch() -> dict[str, dict]:
        try:
            return await _providers_fresh(portal, tenant)
        except BackendMissing:
            return {}

    return await portal.providers.get(tenant, fetch)


@router.get("/", summary="Start: the networks")
async def start(request: Request, portal: PortalDep):
    return render(request, "start.html", networks=await portal.tenant_list())


@router.get("/{tenant}/", summary="A network's course search")
async def search(request: Request, tenant: TenantSlug, portal: PortalDep):
    network = await _network(portal, tenant)
    form, errors = domain.parse_search(request.query_params, portal.gazetteer.resolve)
    result, unavailable = None, False
    if not errors:
        try:
            result = await portal.backends.get("catalog", f"/v1/public/{tenant}/offers",
                                               params=form.catalog_params(PAGE_SIZE))
        except BackendMissing:
            unavailable = True
    providers = await _providers(portal, tenant) if result else {}
    items = (result or {}).get("items", [])
    total = (result or {}).get("total")
    pages = math.ceil(total / PAGE_SIZE) if isinstance(total, int) else None
    return render(request, "search.html", tenant=tenant, tenant_info=network, form=form, errors=errors,
                  items=items, total=total, total_exceeds=(result or {}).get("total_exceeds", False), pages=pages,
                  facets=(result or {}).get("facets") or {}, next_cursor=(result or {}).get("next_cursor"),
                  facets_complete=(result or {}).get("facets_complete", True),
                  has_more=bool((result or {}).get("next_cursor")),
                  providers=providers, unavailable=unavailable, title="Weiterbildung finden")


def _provider_of(offer: dict) -> dict | None:
    provider = offer.get("provider")
    return provider if isinstance(provider, dict) else None


async def _offer(portal: Portal, tenant: str, offer_id: UUID) -> dict:
    return await portal.backends.get("catalog", f"/v1/public/{tenant}/offers/{offer_id}")


@router.get("/{tenant}/kurse/{offer_id}", summary="An offer with all its dates")
async def offer_page(request: Request, tenant: TenantSlug, offer_id: UUID, portal: PortalDep):
    network = await _network(portal, tenant)
    offer = await _offer(portal, tenant, offer_id)
    provider = _provider_of(offer) or (await _providers(portal, tenant)).get(offer.get("provider_id"), {})
    url = f"{portal.settings.portal_public_url.rstrip('/')}/{tenant}/kurse/{offer_id}"
    sessions = sorted(offer.get("sessions") or [], key=lambda s: s.get("start", ""))
    return render(request, "offer.html", tenant=tenant, tenant_info=network, offer=offer, provider=provider,
                  sessions=sessions, jsonld=domain.offer_jsonld(offer, url, provider.get("name")),
                  title=offer.get("title"))


@router.get("/{tenant}/kurse/{offer_id}/termine.ics", summary="The offer's dates as iCalendar")
async def offer_calendar(tenant: TenantSlug, offer_id: UUID, portal: PortalDep):
    await _network(portal, tenant)
    offer = await _offer(portal, tenant, offer_id)
    provider = _provider_of(offer) or (await _providers(portal, tenant)).get(offer.get("provider_id"), {})
    url = f"{portal.settings.portal_public_url.rstrip('/')}/{tenant}/kurse/{offer_id}"
    return Response(domain.offer_calendar(offer, url, provider.get("name")), media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="termine-{offer_id}.ics"'})


@router.get("/{tenant}/anbieter", summary="The network's providers")
async def provider_directory(request: Request, tenant: TenantSlug, portal: PortalDep):
    network = await _network(portal, tenant)
    try:
        providers = sorted((await _providers_fresh(portal, tenant)).values(), key=lambda p: p.get("name", "").lower())
        unavailable = False
    except BackendMissing:
        providers, unavailable = [], True
    return render(request, "providers.html", tenant=tenant, tenant_info=network, providers=providers,
                  unavailable=unavailable, title="Bildungsanbieter")


async def _providers_fresh(portal: Portal, tenant: str) -> dict[str, dict]:
    body = await portal.backends.get("catalog", f"/v1/public/{tenant}/providers", params={"page_size": 500})
    return {p["id"]: p for p in body.get("items", [])}


@router.get("/{tenant}/anbieter/{provider_id}", summary="A provider and its offers")
async def provider_page(request: Request, tenant: TenantSlug, provider_id: UUID, portal: PortalDep):
    network = await _network(portal, tenant)
    provider = (await _providers_fresh(portal, tenant)).get(str(provider_id))
    if provider is None:
        raise BackendNotFound("catalog", 404, None)
    result = await portal.backends.get("catalog", f"/v1/public/{tenant}/offers",
                                       params={"provider_id": str(provider_id), "page_size": 100})
    return render(request, "provider.html", tenant=tenant, tenant_info=network, provider=provider,
                  items=result.get("items", []), total=result.get("total"), title=provider.get("name"))


@router.get("/{tenant}/impressum", summary="The network's imprint")
async def imprint(request: Request, tenant: TenantSlug, portal: PortalDep):
    network = await _network(portal, tenant)
    return render(request, "imprint.html", tenant=tenant, tenant_info=network, title="Impressum")


@router.get("/{tenant}/datenschutz", summary="Privacy notice")
async def privacy(request: Request, tenant: TenantSlug, portal: PortalDep):
    network = await _network(portal, tenant)
    return render(request, "privacy.html", tenant=tenant, tenant_info=network, title="Datenschutz")


# ---- the public demand form (firms without an account) -----------------------------------------

def _public_draft(session) -> dict:
    return session.get("public_demand") or demand_form.defaults()


@router.get("/{tenant}/bedarf-melden", summary="Public demand form: start")
async def public_demand_start(request: Request, tenant: TenantSlug, portal: PortalDep):
    network = await _network(portal, tenant)
    return render(request, "public_demand_start.html", tenant=tenant, tenant_info=network,
                  title="Weiterbildungsbedarf melden")


@router.get("/{tenant}/bedarf-melden/{step}", summary="Public demand form: one step")
async def public_demand_step(request: Request, tenant: TenantSlug, step: str, portal: PortalDep, session: SessionDep):
    network = await _network(portal, tenant)
    draft = _public_draft(session)
    if step == "pruefen":
        return render(request, "demand_check.html", tenant=tenant, tenant_info=network, rows=demand_form.summary(draft),
                      base=f"/{tenant}/bedarf-melden", public=True, title="Angaben prüfen")
    if step not in demand_form.STEP_BY_SLUG:
        return error_page(request, 404, "Seite nicht gefunden", "Diesen Schritt gibt es nicht.")
    return render(request, "demand_step.html", tenant=tenant, tenant_info=network,
                  step=demand_form.STEP_BY_SLUG[step], steps=demand_form.STEPS, values=draft, errors=None,
                  base=f"/{tenant}/bedarf-melden", public=True, title=demand_form.STEP_BY_SLUG[step].title)


@router.post("/{tenant}/bedarf-melden/{step}", summary="Public demand form: answer one step")
async def public_demand_answer(request: Request, tenant: TenantSlug, step: str, portal: PortalDep,
                               session: SessionDep):
    network = await _network(portal, tenant)
    form = await checked_form(request, session)
    draft = _public_draft(session)
    base = f"/{tenant}/bedarf-melden"
    if step == "pruefen":
        if form.get("website"):  # the honeypot: people do not see it, form-filling bots do
            session.pop("public_demand")
            return render(request, "public_demand_done.html", tenant=tenant, tenant_info=network, title="Danke")
        missing = demand_form.missing_step(draft)
        if missing:
            return redirect(f"{base}/{missing}")
        client = request.client.host if request.client else "unknown"
        if not await _within_rate(portal, f"portal:public-demand:{tenant}:{client}",
                                  portal.settings.public_requests_per_hour):
            return error_page(request, 429, "Zu viele Anfragen",
                              "Von Ihrem Anschluss kamen in der letzten Stunde schon viele Anfragen. "
                              "Versuchen Sie es in einer Stunde noch einmal.")
        try:
            await portal.backends.post("matching", f"/v1/public/{tenant}/demand-requests",
                                       json=demand_form.demand_body(draft))
        except BackendMissing:
            return error_page(request, 503, "Vorübergehend nicht möglich",
                              "Anfragen ohne Konto können gerade nicht angenommen werden. Ihre Angaben sind noch "
                              "gespeichert; versuchen Sie es später noch einmal.")
        session.pop("public_demand")
        return render(request, "public_demand_done.html", tenant=tenant, tenant_info=network, title="Danke")
    if step not in demand_form.STEP_BY_SLUG:
        return error_page(request, 404, "Seite nicht gefunden", "Diesen Schritt gibt es nicht.")
    current = demand_form.STEP_BY_SLUG[step]
    answers, errors = demand_form.parse_step(current, form, portal.gazetteer.resolve)
    draft.update(answers)
    session.set("public_demand", draft)
    if errors:
        return render(request, "demand_step.html", 400, tenant=tenant, tenant_info=network, step=current,
                      steps=demand_form.STEPS, values=draft, errors=errors, base=base, public=True,
                      title=f"Fehler: {current.title}")
    return redirect(f"{base}/{demand_form.next_slug(step)}")


async def _within_rate(portal: Portal, key: str, per_hour: int) -> bool:
    count = await portal.redis.incr(key)
    if count == 1:
        await portal.redis.expire(key, 3600)
    return count <= per_hour
