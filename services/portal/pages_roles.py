"""The signed-in pages of each role: employers and counsellors (demands, guided form, ranked
offers with reasons and own cost), providers (offers, open-Qcat import, matched demands,
notification settings), network admins (providers, delivery log, unmet demand), operators
(tenants). Every page calls the services with the user's own token; a service that cannot do a
thing yet gives a German message, not an error."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.convertors import Convertor, register_url_convertor

from services.portal import charts, demand_form, domain
from services.portal.backends import BackendError, BackendMissing, BackendNotFound
from services.portal.security import checked_form
from services.portal.web import Me, PortalDep, SessionDep, error_page, redirect, render, signed_in

router = APIRouter()

EMPLOYER = ("employer",)
COUNSELOR = ("counselor", "network_admin")
PROVIDER = ("provider",)
ADMIN = ("network_admin", "operator")
AREAS = {"arbeitgeber": EMPLOYER, "beratung": COUNSELOR}


async def _optional(call, default=None) -> tuple[Any, bool]:
    """A backend answer, or (default, True) when the service cannot do it yet."""
    try:
        return await call, False
    except BackendMissing:
        return default, True


# ---- demands: employers and counsellors ---------------------------------------------------------

class AreaConvertor(Convertor):
    """The two areas that share the demand pages, so that /anbieter/bedarfe/… stays the provider's."""

    regex = "arbeitgeber|beratung"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("area", AreaConvertor())


def _area_of(request: Request) -> str:
    return request.url.path.strip("/").split("/")[0]


def _guard(area: str, me: Me) -> None:
    from services.portal.web import Forbidden

    if area not in AREAS or not me.has(*AREAS[area]):
        raise Forbidden()


@router.get("/arbeitgeber", summary="Employer: own demands")
@router.get("/beratung", summary="Counsellor: the network's demands and requests")
async def demand_home(request: Request, portal: PortalDep, me: Me = signed_in(*EMPLOYER, *COUNSELOR)):
    area = _area_of(request)
    _guard(area, me)
    demands, demands_missing = await _optional(portal.backends.get("matching", "/v1/demands", token=me.token,
                                                                   params={"page_size": 100}), {"items": []})
    requests_, requests_missing = ({"items": []}, False)
    if area == "beratung":
        requests_, requests_missing = await _optional(portal.backends.get(
            "matching", "/v1/demand-requests", token=me.token, params={"status": "new"}), {"items": []})
    return render(request, "demand_home.html", area=area, demands=demands.get("items", []),
                  demands_missing=demands_missing, requests=requests_.get("items", []),
                  requests_missing=requests_missing,
                  title="Meine Weiterbildungsbedarfe" if area == "arbeitgeber" else "Bedarfe im Netzwerk")


def _draft_key(demand_id: str | None) -> str:
    return f"demand_draft:{demand_id or 'neu'}"


async def _draft(session, portal, me: Me, demand_id: UUID | None) -> dict:
    key = _draft_key(str(demand_id) if demand_id else None)
    draft = session.get(key)
    if draft is None:
        if demand_id:
            demand = await portal.backends.get("matching", f"/v1/demands/{demand_id}", token=me.token)
            draft = demand_form.draft_from_demand(demand)
        else:
            draft = demand_form.defaults()
        session.set(key, draft)
    return draft


def _wizard_base(area: str, demand_id: UUID | None) -> str:
    return f"/{area}/bedarfe/{demand_id}/bearbeiten" if demand_id else f"/{area}/bedarfe/neu"


async def _show_step(request, portal, session, me, area, step, demand_id=None):
    _guard(area, me)
    draft = await _draft(session, portal, me, demand_id)
    base = _wizard_base(area, demand_id)
    if step == "pruefen":
        return render(request, "demand_check.html", rows=demand_form.summary(draft), base=base, public=False,
                      editing=bool(demand_id), title="Angaben prüfen")
    if step not in demand_form.STEP_BY_SLUG:
        return error_page(request, 404, "Seite nicht gefunden", "Diesen Schritt gibt es nicht.")
    current = demand_form.STEP_BY_SLUG[step]
    return render(request, "demand_step.html", step=current, steps=demand_form.STEPS, values=draft, errors=None,
                  base=base, public=False, title=current.title)


async def _answer_step(request, portal, session, me, area, step, demand_id=None):
    _guard(area, me)
    form = await checked_form(request, session)
    draft = await _draft(session, portal, me, demand_id)
    base = _wizard_base(area, demand_id)
    key = _draft_key(str(demand_id) if demand_id else None)
    if step == "pruefen":
        missing = demand_form.missing_step(draft)
        if missing:
            return redirect(f"{base}/{missing}")
        body = demand_form.demand_body(draft)
        try:
            if demand_id:
                demand = await portal.backends.put("matching", f"/v1/demands/{demand_id}", token=me.token, json=body)
            else:
                demand = await portal.backends.post("matching", "/v1/demands", token=me.token, json=body)
        except BackendMissing:
            return error_page(request, 503, "Vorübergehend nicht möglich",
                              "Der Bedarf konnte gerade nicht gespeichert werden. Ihre Angaben bleiben erhalten; "
                              "versuchen Sie es gleich noch einmal.")
        session.pop(key)
        session.flash("Ihr Bedarf ist gespeichert. Hier sind die passenden Angebote."
                      if not demand_id else "Ihre Änderungen sind gespeichert.")
        return redirect(f"/{area}/bedarfe/{demand['id']}")
    if step not in demand_form.STEP_BY_SLUG:
        return error_page(request, 404, "Seite nicht gefunden", "Diesen Schritt gibt es nicht.")
    current = demand_form.STEP_BY_SLUG[step]
    answers, errors = demand_form.parse_step(current, form, portal.gazetteer.resolve)
    draft.update(answers)
    session.set(key, draft)
    if errors:
        return render(request, "demand_step.html", 400, step=current, steps=demand_form.STEPS, values=draft,
                      errors=errors, base=base, public=False, title=f"Fehler: {current.title}")
    return redirect(f"{base}/{demand_form.next_slug(step)}")


@router.get("/{area:area}/bedarfe/neu/{step}", summary="Guided demand form: one step")
async def new_demand_step(request: Request, area: str, step: str, portal: PortalDep, session: SessionDep,
                          me: Me = signed_in(*EMPLOYER, *COUNSELOR)):
    return await _show_step(request, portal, session, me, area, step)


@router.post("/{area:area}/bedarfe/neu/{step}", summary="Guided demand form: answer one step")
async def new_demand_answer(request: Request, area: str, step: str, portal: PortalDep, session: SessionDep,
                            me: Me = signed_in(*EMPLOYER, *COUNSELOR)):
    return await _answer_step(request, portal, session, me, area, step)


@router.get("/{area:area}/bedarfe/{demand_id}/bearbeiten/{step}", summary="Change a demand: one step")
async def edit_demand_step(request: Request, area: str, demand_id: UUID, step: str, portal: PortalDep,
                           session: SessionDep, me: Me = signed_in(*EMPLOYER, *COUNSELOR)):
    return await _show_step(request, portal, session, me, area, step, demand_id)


@router.post("/{area:area}/bedarfe/{demand_id}/bearbeiten/{step}", summary="Change a demand: answer one step")
async def edit_demand_answer(request: Request, area: str, demand_id: UUID, step: str, portal: PortalDep,
                             session: SessionDep, me: Me = signed_in(*EMPLOYER, *COUNSELOR)):
    return await _answer_step(request, portal, session, me, area, step, demand_id)


@router.get("/{area:area}/bedarfe/{demand_id}", summary="A demand with its ranked offers")
async def demand_page(request: Request, area: str, demand_id: UUID, portal: PortalDep,
                      me: Me = signed_in(*EMPLOYER, *COUNSELOR)):
    _guard(area, me)
    demand = await portal.backends.get("matching", f"/v1/demands/{demand_id}", token=me.token)
    ranked, ranked_missing = await _optional(portal.backends.get(
        "matching", f"/v1/demands/{demand_id}/offers", token=me.token), None)
    if ranked is None:  # until the browse view lands: the announced matches
        ranked = await portal.backends.get("matching", f"/v1/demands/{demand_id}/matches", token=me.token)
    employees = (demand.get("employer") or {}).get("employees")
    offers = [_ranked_offer(item, employees) for item in ranked.get("items", [])]
    return render(request, "demand.html", area=area, demand=demand, offers=offers,
                  title=demand.get("title", "Bedarf"))


def _ranked_offer(item: dict, employees: int | None) -> dict:
    offer = item.get("offer") or item
    reasons = item.get("reasons") or {}
    cost, why = domain.employer_cost(offer.get("price_eur", reasons.get("price_eur")), employees,
                                     bool((offer.get("funding") or reasons.get("funding") or {}).get("qcg")))
    if "employer_cost_eur_after_qcg" in reasons:
        cost = reasons["employer_cost_eur_after_qcg"]
    return {"id": item.get("offer_id") or offer.get("id"), "title": offer.get("title") or item.get("title"),
            "tenant": offer.get("tenant"), "score": item.get("score"),
            "reasons": domain.reasons_text(reasons), "cost": cost, "cost_why": why,
            "price": offer.get("price_eur", reasons.get("price_eur"))}


@router.post("/{area:area}/bedarfe/{demand_id}/schliessen", summary="Close a demand")
async def close_demand(request: Request, area: str, demand_id: UUID, portal: PortalDep, session: SessionDep,
                       me: Me = signed_in(*EMPLOYER, *COUNSELOR)):
    _guard(area, me)
    await checked_form(request, session)
    await portal.backends.post("matching", f"/v1/demands/{demand_id}/close", token=me.token)
    session.flash("Der Bedarf ist geschlossen. Anbieter werden dazu nicht mehr benachrichtigt.")
    return redirect(f"/{area}/bedarfe/{demand_id}")


@router.get("/beratung/anfragen/{request_id}", summary="Counsellor: a request from the public form")
async def demand_request(request: Request, request_id: UUID, portal: PortalDep, me: Me = signed_in(*COUNSELOR)):
    item = await portal.backends.get("matching", f"/v1/demand-requests/{request_id}", token=me.token)
    body = item.get("demand") or item
    return render(request, "demand_request.html", item=item, rows=demand_form.summary(
        demand_form.draft_from_demand(body)), title="Anfrage prüfen")


@router.post("/beratung/anfragen/{request_id}/eroeffnen", summary="Counsellor: open a request as a demand")
async def open_request(request: Request, request_id: UUID, portal: PortalDep, session: SessionDep,
                       me: Me = signed_in(*COUNSELOR)):
    await checked_form(request, session)
    demand = await portal.backends.post("matching", f"/v1/demand-requests/{request_id}/open", token=me.token)
    session.flash("Die Anfrage ist jetzt ein Bedarf im Netzwerk.")
    return redirect(f"/beratung/bedarfe/{demand.get('demand_id') or demand['id']}")


# ---- providers ---------------------------------------------------------------------------------

async def _my_providers(portal, me: Me) -> tuple[list[dict], bool]:
    listed, missing = await _optional(portal.backends.get("catalog", "/v1/providers", token=me.token,
                                                          params={"mine": "true"}), None)
    if listed is not None:  # the catalog knows whom the user acts for (members, providers claim)
        return listed.get("items", []), False
    found = []
    ids = set(me.user.get("providers", [])) | set(me.session.get("created_providers") or [])
    for provider_id in sorted(ids):
        try:
            found.append(await portal.backends.get("catalog", f"/v1/providers/{provider_id}", token=me.token))
        except BackendNotFound:
            continue
    return found, missing


@router.get("/anbieter", summary="Provider: own providers and offers")
async def provider_home(request: Request, portal: PortalDep, me: Me = signed_in(*PROVIDER)):
    providers, _ = await _my_providers(portal, me)
    offers: list[dict] = []
    for provider in providers:
        result = await portal.backends.get("catalog", "/v1/offers", token=me.token,
                                           params={"provider_id": provider["id"], "page_size": 100})
        for offer in result.get("items", []):
            offer["completeness"], offer["missing"] = domain.completeness(offer)
            offer["provider_name"] = provider["name"]
            offers.append(offer)
    return render(request, "provider_home.html", providers=providers, offers=offers, title="Mein Bildungsangebot")


@router.post("/anbieter/anlegen", summary="Provider: register the own organisation")
async def create_provider(request: Request, portal: PortalDep, session: SessionDep, me: Me = signed_in(*PROVIDER)):
    form = await checked_form(request, session)
    name, email = (form.get("name") or "").strip(), (form.get("email") or "").strip()
    errors = domain.FormErrors()
    if not name:
        errors.add("name", "Geben Sie den Namen Ihrer Einrichtung an.")
    if not demand_form.EMAIL.match(email):
        errors.add("email", "Geben Sie eine E-Mail-Adresse im Format name@beispiel.de an.")
    if errors:
        return render(request, "provider_home.html", 400, providers=[], offers=[], errors=errors,
                      values={"name": name, "email": email}, title="Fehler: Mein Bildungsangebot")
    provider = await portal.backends.post("catalog", "/v1/providers", token=me.token,
                                          json={"name": name[:300], "emails": [email]})
    session.set("created_providers", [*(session.get("created_providers") or []), provider["id"]])
    session.flash(f"{provider['name']} ist angelegt.")
    return redirect("/anbieter")


@router.get("/anbieter/import", summary="Provider: open-Qcat upload")
async def import_form(request: Request, portal: PortalDep, me: Me = signed_in(*PROVIDER)):
    providers, _ = await _my_providers(portal, me)
    return render(request, "import.html", providers=providers, report=None, title="Angebote importieren")


@router.post("/anbieter/import", summary="Provider: upload an open-Qcat file and see the report")
async def import_upload(request: Request, portal: PortalDep, session: SessionDep, me: Me = signed_in(*PROVIDER)):
    form = await checked_form(request, session)
    providers, _ = await _my_providers(portal, me)
    upload = form.get("datei")
    provider_id = form.get("provider_id")
    errors = domain.FormErrors()
    if provider_id not in {p["id"] for p in providers}:
        errors.add("provider_id", "Wählen Sie die Einrichtung aus, für die Sie importieren.")
    data = await upload.read() if upload is not None and hasattr(upload, "read") else b""
    if not data:
        errors.add("datei", "Wählen Sie eine open-Qcat-Datei (XML) aus.")
    if errors:
        return render(request, "import.html", 400, providers=providers, report=None, errors=errors,
                      title="Fehler: Angebote importieren")
    try:
        reply = await portal.backends.call("catalog", "POST", "/v1/imports/openqcat", token=me.token,
                                           params={"provider_id": provider_id}, content=data,
                                           content_type="application/xml")
        report, failed = reply.body, None
    except BackendMissing:
        report, failed = None, "Der Import ist gerade nicht verfügbar. Versuchen Sie es später noch einmal."
    except BackendError as exc:
        report = exc.body if isinstance(exc.body, dict) else None
        failed = "Die Datei konnte nicht gelesen werden. Prüfen Sie, ob es eine open-Qcat-Datei ist."
    return render(request, "import.html", providers=providers, report=report, failed=failed,
                  title="Importbericht")


def _offer_values(form) -> tuple[dict, domain.FormErrors]:
    """The offer form's fields as the catalog's body."""
    errors = domain.FormErrors()
    title = (form.get("title") or "").strip()
    if not title:
        errors.add("title", "Geben Sie den Titel des Angebots an.")
    fmt = form.get("format")
    if fmt not in domain.FORMATS:
        errors.add("format", "Wählen Sie eine Lernform aus.")
    schedule = form.get("schedule")
    if schedule not in domain.SCHEDULES:
        errors.add("schedule", "Wählen Sie ein Zeitmodell aus.")
    qualification = form.get("qualification")
    if qualification not in domain.QUALIFICATIONS:
        errors.add("qualification", "Wählen Sie die Art des Abschlusses aus.")
    hours = domain._number(form.get("hours"), "hours", "Die Dauer", errors, minimum=1, maximum=10_000)
    price = domain._number(form.get("price_eur"), "price_eur", "Der Preis", errors, maximum=1_000_000)
    start = domain._date(form.get("start"), "start", "Der Beginn", errors)
    end = domain._date(form.get("end"), "end", "Das Ende", errors)
    if not start and not errors.for_field("start"):
        errors.add("start", "Geben Sie den Beginn des ersten Termins an.")
    if start and end and end < start:
        errors.add("end", "Das Ende muss nach dem Beginn liegen.")
    location = None  # set by the caller, which resolves the place
    body = {
        "provider_id": form.get("provider_id"), "title": title[:500],
        "description": (form.get("description") or "").strip()[:50_000],
        "skills": [s.strip() for s in (form.get("skills") or "").split(",") if s.strip()][:100],
        "qualification": qualification, "format": fmt, "schedule": schedule, "hours": hours, "price_eur": price,
        "funding": {k: form.get(f"funding_{k}") == "ja" for k in domain.FUNDINGS},
        "sessions": [{"start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
                      "location": location}],
        "visibility": {"scope": form.get("visibility") if form.get("visibility") in ("home", "all") else "home",
                       "networks": []},
        "language": "de", "status": "draft" if form.get("status") == "draft" else "published",
    }
    return body, errors


def _changed_offer(current: dict, body: dict, form) -> dict:
    """The offer as the form changes it: what the form does not show stays as it is (the import's
    PRODUCT_ID, the Maßnahmenummer, occupation codes, the other dates, a sharing with named networks).
    Before, saving the form wrote the offer with its first date only and without those: an imported
    course lost its other dates, and the next import no longer knew it."""
    kept = {k: current[k] for k in ("external_id", "esco_skills", "occupation_codes", "measure_number", "url",
                                    "language") if current.get(k) is not None}
    sessions = list(current.get("sessions") or [])
    first = {**(sessions[0] if sessions else {}), **{k: v for k, v in body["sessions"][0].items()}}
    if first.get("location") is None:
        first.pop("location", None)
    changed = kept | body | {"sessions": [first, *sessions[1:]]}
    if form.get("visibility") not in ("home", "all"):  # a sharing the form cannot show: kept
        changed["visibility"] = current.get("own_visibility") or current["visibility"]
    return changed


def _values_of(offer: dict) -> dict:
    first = (offer.get("sessions") or [{}])[0]
    loc = first.get("location") or {}
    return {**offer, "skills": ", ".join(offer.get("skills", [])), "start": first.get("start", ""),
            "end": first.get("end") or "", "place": f"{loc.get('zip', '')} {loc.get('city', '')}".strip(),
            "hours": f"{offer['hours']:g}" if offer.get("hours") is not None else "",
            "price_eur": f"{offer['price_eur']:g}" if offer.get("price_eur") is not None else "",
            "visibility": (offer.get("visibility") or {}).get("scope", "home")}


@router.get("/anbieter/angebote/neu", summary="Provider: new offer")
async def new_offer(request: Request, portal: PortalDep, me: Me = signed_in(*PROVIDER)):
    providers, _ = await _my_providers(portal, me)
    return render(request, "offer_form.html", providers=providers, values={"status": "published"}, errors=None,
                  offer_id=None, title="Neues Angebot")


@router.get("/anbieter/angebote/{offer_id}", summary="Provider: change an offer")
async def edit_offer(request: Request, offer_id: UUID, portal: PortalDep, me: Me = signed_in(*PROVIDER)):
    providers, _ = await _my_providers(portal, me)
    offer = await portal.backends.get("catalog", f"/v1/offers/{offer_id}", token=me.token)
    if offer["provider_id"] not in {p["id"] for p in providers}:
        raise BackendNotFound("catalog", 404, None)
    score, missing = domain.completeness(offer)
    return render(request, "offer_form.html", providers=providers, values=_values_of(offer), errors=None,
                  offer_id=offer_id, completeness=score, missing=missing, title=offer["title"])


@router.post("/anbieter/angebote", summary="Provider: save a new offer")
@router.post("/anbieter/angebote/{offer_id}", summary="Provider: save an offer")
async def save_offer(request: Request, portal: PortalDep, session: SessionDep, offer_id: UUID | None = None,
                     me: Me = signed_in(*PROVIDER)):
    form = await checked_form(request, session)
    providers, _ = await _my_providers(portal, me)
    body, errors = _offer_values(form)
    if body["provider_id"] not in {p["id"] for p in providers}:
        errors.add("provider_id", "Wählen Sie Ihre Einrichtung aus.")
    if body["format"] in ("presence", "hybrid", "blended"):
        place = portal.gazetteer.resolve(form.get("place") or "")
        if place is None:
            errors.add("place", "Geben Sie Postleitzahl und Ort des Lernorts an, zum Beispiel „21335 Lüneburg“.")
        else:
            zip_code = place.zip or (form.get("place") or "").split(" ")[0]
            body["sessions"][0]["location"] = {"zip": zip_code if zip_code.isdigit() else "00000",
                                               "city": place.name, "lat": place.lat, "lon": place.lon}
    values = {k: form.get(k) for k in form.keys() if k != "csrf_token"}
    if errors:
        return render(request, "offer_form.html", 400, providers=providers, values=values, errors=errors,
                      offer_id=offer_id, title="Fehler: Angebot")
    if offer_id:
        current = await portal.backends.get("catalog", f"/v1/offers/{offer_id}", token=me.token)
        seen = (form.get("version") or "").strip()
        try:
            if seen.isdigit() and int(seen) != current["version"]:
                raise BackendError("catalog", 412, None)
            saved = await portal.backends.put("catalog", f"/v1/offers/{offer_id}", token=me.token,
                                              json=_changed_offer(current, body, form),
                                              if_match=f'"{seen}"' if seen.isdigit() else None)
        except BackendError as exc:
            if exc.status not in (409, 412):
                raise
            errors.add("title", "Jemand hat das Angebot geändert, während Sie es bearbeitet haben. Ihre Änderungen"
                                " sind nicht gespeichert: Laden Sie die Seite neu und tragen Sie sie noch einmal ein."
                       if exc.status == 412 else "Das Angebot ist zurückgezogen und kann nicht mehr geändert werden.")
            return render(request, "offer_form.html", 409, providers=providers, values=values, errors=errors,
                          offer_id=offer_id, title="Fehler: Angebot")
    else:
        saved = await portal.backends.post("catalog", "/v1/offers", token=me.token, json=body)
    session.flash("Das Angebot ist gespeichert." if saved.get("status") != "draft" else "Der Entwurf ist gespeichert.")
    return redirect(f"/anbieter/angebote/{saved['id']}")


@router.post("/anbieter/angebote/{offer_id}/zurueckziehen", summary="Provider: withdraw an offer")
async def withdraw_offer(request: Request, offer_id: UUID, portal: PortalDep, session: SessionDep,
                         me: Me = signed_in(*PROVIDER)):
    await checked_form(request, session)
    await portal.backends.post("catalog", f"/v1/offers/{offer_id}/withdraw", token=me.token)
    session.flash("Das Angebot ist zurückgezogen und nicht mehr zu finden.")
    return redirect("/anbieter")


@router.get("/anbieter/bedarfe", summary="Provider: demands matched to its offers")
async def provider_demands(request: Request, portal: PortalDep, me: Me = signed_in(*PROVIDER)):
    matched, missing = await _optional(portal.backends.get("matching", "/v1/matched-demands", token=me.token),
                                       {"items": []})
    return render(request, "provider_demands.html", items=_by_demand(matched.get("items", [])), missing=missing,
                  title="Passende Bedarfe")


def _by_demand(items: list[dict]) -> list[dict]:
    """Matching lists (demand, offer) pairs; a provider reads one line per demand with its offers."""
    demands: dict[str, dict] = {}
    for item in items:
        demand = item.get("demand") or {}
        entry = demands.setdefault(demand.get("id"), {**demand, "employer": item.get("employer") or {}, "offers": []})
        entry["offers"].append({"id": item.get("offer_id"), "title": item.get("offer_title"),
                                "reasons": domain.reasons_text(item.get("reasons") or {})})
    return list(demands.values())


@router.get("/anbieter/bedarfe/{demand_id}", summary="Provider: a matched demand (the alert mail's link)")
async def provider_demand(request: Request, demand_id: UUID, portal: PortalDep, me: Me = signed_in(*PROVIDER)):
    matched = await portal.backends.get("matching", "/v1/matched-demands", token=me.token)
    found = [d for d in _by_demand(matched.get("items", [])) if d.get("id") == str(demand_id)]
    if not found:  # not matched to this provider's offers, or another network's: as if it did not exist
        raise BackendNotFound("matching", 404, None)
    demand = found[0]
    return render(request, "provider_demand.html", demand=demand, matches=demand["offers"],
                  title=demand.get("title", "Bedarf"))


@router.get("/anbieter/benachrichtigungen", summary="Provider: notification settings")
async def preferences(request: Request, portal: PortalDep, me: Me = signed_in(*PROVIDER)):
    providers, _ = await _my_providers(portal, me)
    prefs = []
    for provider in providers:
        pref, missing = await _optional(portal.backends.get(
            "notifications", f"/v1/preferences/{provider['id']}", token=me.token), {"mode": "instant"})
        prefs.append({"provider": provider, "mode": pref.get("mode", "instant"), "missing": missing})
    return render(request, "preferences.html", prefs=prefs, title="Benachrichtigungen")


@router.post("/anbieter/benachrichtigungen/{provider_id}", summary="Provider: change notification settings")
async def save_preferences(request: Request, provider_id: UUID, portal: PortalDep, session: SessionDep,
                           me: Me = signed_in(*PROVIDER)):
    form = await checked_form(request, session)
    mode = form.get("mode")
    if mode not in ("instant", "daily", "off"):
        session.flash("Wählen Sie, wie oft Sie benachrichtigt werden möchten.")
        return redirect("/anbieter/benachrichtigungen")
    await portal.backends.put("notifications", f"/v1/preferences/{provider_id}", token=me.token, json={"mode": mode})
    session.flash("Ihre Einstellung ist gespeichert.")
    return redirect("/anbieter/benachrichtigungen")


# ---- network admin and operator ----------------------------------------------------------------

@router.get("/netzwerk", summary="Network admin: overview")
async def network_home(request: Request, portal: PortalDep, me: Me = signed_in(*ADMIN)):
    providers, providers_missing = await _optional(portal.backends.get(
        "catalog", "/v1/providers", token=me.token, params={"page_size": 200}), {"items": []})
    return render(request, "network_home.html", providers=providers.get("items", []),
                  providers_missing=providers_missing, title="Netzwerk verwalten")


@router.get("/netzwerk/freigaben", summary="Network admin: sharing defaults")
async def sharing(request: Request, portal: PortalDep, me: Me = signed_in(*ADMIN)):
    current, missing = await _optional(portal.backends.get("catalog", "/v1/sharing", token=me.token),
                                       {"networks": []})
    networks = [t for t in await portal.tenant_list() if t["id"] != me.tenant]
    return render(request, "sharing.html", networks=networks, shared=current.get("networks", []), missing=missing,
                  title="Angebote mit anderen Netzwerken teilen")


@router.post("/netzwerk/freigaben", summary="Network admin: change sharing defaults")
async def save_sharing(request: Request, portal: PortalDep, session: SessionDep, me: Me = signed_in(*ADMIN)):
    form = await checked_form(request, session)
    known = {t["id"] for t in await portal.tenant_list()}
    chosen = [n for n in form.getlist("netzwerke") if n in known and n != me.tenant]
    await portal.backends.put("catalog", "/v1/sharing", token=me.token, json={"networks": chosen})
    session.flash("Die Freigabe ist gespeichert. Die Angebote Ihres Netzwerks erscheinen jetzt auch dort."
                  if chosen else "Die Angebote Ihres Netzwerks werden mit keinem anderen Netzwerk mehr geteilt.")
    return redirect("/netzwerk/freigaben")


async def _members_page(request: Request, portal, me: Me, values: dict | None = None,
                        errors: domain.FormErrors | None = None, status: int = 200):
    members, missing = await _optional(portal.backends.get("identity", "/v1/members", token=me.token),
                                       {"items": []})
    providers, _ = await _optional(portal.backends.get(
        "catalog", "/v1/providers", token=me.token, params={"page_size": 200}), {"items": []})
    names = {p["id"]: p["name"] for p in providers.get("items", [])}
    return render(request, "members.html", status, members=members.get("items", []), missing=missing,
                  provider_names=names, roles=domain.INVITABLE_ROLES, values=values or {"role": "provider"},
                  errors=errors, title="Mitglieder des Netzwerks")


@router.get("/netzwerk/mitglieder", summary="Network admin: members, invite and remove")
async def members(request: Request, portal: PortalDep, me: Me = signed_in("network_admin")):
    return await _members_page(request, portal, me)


@router.post("/netzwerk/mitglieder", summary="Network admin: invite a member")
async def invite_member(request: Request, portal: PortalDep, session: SessionDep,
                        me: Me = signed_in("network_admin")):
    form = await checked_form(request, session)
    providers, _ = await _optional(portal.backends.get(
        "catalog", "/v1/providers", token=me.token, params={"page_size": 200}), {"items": []})
    values, body, errors = domain.invitation(form, {p["id"] for p in providers.get("items", [])})
    if not errors:
        try:
            await portal.backends.post("identity", "/v1/members", token=me.token, json=body)
        except BackendError as exc:
            if exc.status != 409:
                raise
            errors.add("email", "Eine Person mit dieser E-Mail-Adresse ist schon Mitglied. "
                                "Prüfen Sie die Adresse oder wählen Sie eine andere.")
        else:
            session.flash(f"{values['email']} ist eingeladen und erhält eine E-Mail, um ein Passwort festzulegen.")
            return redirect("/netzwerk/mitglieder")
    return await _members_page(request, portal, me, values, errors, status=400)


@router.post("/netzwerk/mitglieder/{user_id}/entfernen", summary="Network admin: remove a member")
async def remove_member(request: Request, user_id: UUID, portal: PortalDep, session: SessionDep,
                        me: Me = signed_in("network_admin")):
    await checked_form(request, session)
    try:
        await portal.backends.delete("identity", f"/v1/members/{user_id}", token=me.token)
    except BackendError as exc:
        if exc.status != 409:
            raise
        session.flash("Sie können sich nicht selbst entfernen. Bitten Sie eine andere Person der Netzwerkverwaltung.")
    else:
        session.flash("Die Person ist aus dem Netzwerk entfernt und kann sich nicht mehr anmelden.")
    return redirect("/netzwerk/mitglieder")


@router.get("/netzwerk/protokoll", summary="Network admin: administrative actions (identity and catalog)")
async def audit_page(request: Request, portal: PortalDep, me: Me = signed_in("network_admin")):
    entries, missing = [], False
    for service in ("identity", "catalog"):
        log, gone = await _optional(portal.backends.get(service, "/v1/audit", token=me.token,
                                                        params={"page_size": 100}), {"items": []})
        entries += log.get("items", [])
        missing = missing or gone
    entries.sort(key=lambda e: e["at"], reverse=True)
    providers, _ = await _optional(portal.backends.get(
        "catalog", "/v1/providers", token=me.token, params={"page_size": 200}), {"items": []})
    provider_names = {p["id"]: p["name"] for p in providers.get("items", [])}
    tenant_names = {t["id"]: t["name"] for t in await portal.tenant_list()}
    lines = [{"at": e["at"], "actor": e.get("actor"), "what": domain.audit_line(e, provider_names, tenant_names)}
             for e in entries[:100]]
    return render(request, "audit.html", entries=lines, missing=missing, title="Protokoll der Verwaltung")


@router.get("/netzwerk/zustellungen", summary="Network admin: delivery log")
async def deliveries(request: Request, portal: PortalDep, me: Me = signed_in(*ADMIN)):
    log, missing = await _optional(portal.backends.get("notifications", "/v1/deliveries", token=me.token,
                                                       params={"page_size": 100}), {"items": []})
    return render(request, "deliveries.html", items=log.get("items", []), missing=missing, title="Versandprotokoll")


async def _gaps(portal, me: Me) -> tuple[list[charts.Gap], bool]:
    today = date.today()
    body, missing = await _optional(portal.backends.get(
        "matching", "/v1/insights/gaps", token=me.token,
        params={"from": (today - timedelta(days=365)).isoformat(), "to": today.isoformat()}), {"items": []})
    return charts.gaps_from(body), missing


@router.get("/netzwerk/luecken", summary="Network admin: unmet demand as a chart")
async def gaps_page(request: Request, portal: PortalDep, me: Me = signed_in(*ADMIN)):
    gaps, missing = await _gaps(portal, me)
    chart = charts.bar_chart(gaps, "Bedarfe und Angebote je Themenfeld und Region") if gaps else None
    return render(request, "gaps.html", gaps=gaps, chart=chart, missing=missing, title="Ungedeckter Bedarf")


@router.get("/netzwerk/luecken.csv", summary="Network admin: unmet demand as CSV")
async def gaps_csv(portal: PortalDep, me: Me = signed_in(*ADMIN)):
    gaps, _ = await _gaps(portal, me)
    return Response(charts.gaps_csv(gaps).encode("utf-8-sig"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="ungedeckter-bedarf.csv"'})


@router.get("/betrieb/netzwerke", summary="Operator: tenants")
async def tenants(request: Request, portal: PortalDep, me: Me = signed_in("operator")):
    listed = await portal.backends.get("identity", "/v1/tenants", token=me.token)
    return render(request, "tenants.html", tenants=listed.get("items", []), errors=None, values={},
                  title="Netzwerke")


@router.post("/betrieb/netzwerke", summary="Operator: add a network")
async def add_tenant(request: Request, portal: PortalDep, session: SessionDep, me: Me = signed_in("operator")):
    form = await checked_form(request, session)
    values = {"id": (form.get("id") or "").strip(), "name": (form.get("name") or "").strip()}
    errors = domain.FormErrors()
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,62}", values["id"]):
        errors.add("id", "Die Kurzbezeichnung besteht aus Kleinbuchstaben, Ziffern und Bindestrichen, "
                         "zum Beispiel „ostwestfalen-lippe“.")
    if not values["name"]:
        errors.add("name", "Geben Sie den Namen des Netzwerks an.")
    if not errors:
        try:
            await portal.backends.post("identity", "/v1/tenants", token=me.token, json=values)
            session.flash(f"Das Netzwerk „{values['name']}“ ist angelegt.")
            return redirect("/betrieb/netzwerke")
        except BackendError as exc:
            if exc.status != 409:
                raise
            errors.add("id", "Diese Kurzbezeichnung ist schon vergeben. Wählen Sie eine andere.")
    listed = await portal.backends.get("identity", "/v1/tenants", token=me.token)
    return render(request, "tenants.html", 400, tenants=listed.get("items", []), errors=errors, values=values,
                  title="Fehler: Netzwerke")
