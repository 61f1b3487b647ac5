"""The guided demand form: one question group per step (GOV.UK pattern), a check-your-answers
page, then one demand body for the matching service. Employers, counsellors (on an employer's
behalf) and firms without an account (public form) walk the same steps."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from services.portal.domain import FORMATS, SCHEDULES, FormErrors, _date, _number, _text, euro, german_date

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DISTANCES = {"25": "bis 25 km", "50": "bis 50 km", "100": "bis 100 km", "200": "bis 200 km"}


@dataclass(frozen=True)
class Field:
    id: str
    label: str
    kind: str = "text"  # text, textarea, number, date, email, checkboxes, radios
    hint: str | None = None
    required: bool = False
    options: dict[str, str] = field(default_factory=dict)
    width: str = ""
    autocomplete: str | None = None


@dataclass(frozen=True)
class Step:
    slug: str
    title: str
    fields: tuple[Field, ...]


STEPS = (
    Step("bedarf", "Was sollen Ihre Beschäftigten lernen?", (
        Field("title", "Kurz gesagt: welche Weiterbildung suchen Sie?", required=True,
              hint="Zum Beispiel „Staplerschein für Lagerhelfer“"),
        Field("description", "Beschreiben Sie, was die Beschäftigten danach können sollen", "textarea",
              hint="Je genauer, desto besser passen die Vorschläge."),
        Field("skills", "Stichworte", hint="Durch Komma getrennt, zum Beispiel „Gabelstapler, Ladungssicherung“"),
        Field("participants", "Wie viele Beschäftigte sollen teilnehmen?", "number", required=True, width="4"),
    )),
    Step("betrieb", "Wo ist Ihr Betrieb?", (
        Field("employer_name", "Name des Betriebs", required=True, autocomplete="organization"),
        Field("employees", "Wie viele Beschäftigte hat Ihr Betrieb?", "number", width="6",
              hint="Davon hängt die Förderung nach § 82 SGB III ab."),
        Field("place", "Postleitzahl und Ort", required=True, hint="Zum Beispiel „21335 Lüneburg“",
              autocomplete="postal-code"),
    )),
    Step("zeit", "Wann und wie soll gelernt werden?", (
        Field("start_from", "Beginn frühestens", "date", required=True),
        Field("start_to", "Beginn spätestens", "date", required=True),
        Field("formats", "Welche Lernformen passen?", "checkboxes", required=True, options=FORMATS),
        Field("schedules", "Welche Zeitmodelle passen? (freiwillig)", "checkboxes", options=SCHEDULES),
        Field("max_distance_km", "Wie weit darf der Lernort höchstens entfernt sein?", "radios", required=True,
              options=DISTANCES),
    )),
    Step("budget", "Budget und Förderung", (
        Field("max_price_eur", "Höchstpreis je Person in Euro (freiwillig)", "number", width="8"),
        Field("funding_required", "Muss die Weiterbildung nach § 82 SGB III förderfähig sein?", "radios",
              required=True, options={"ja": "Ja", "nein": "Nein"}),
    )),
    Step("kontakt", "Wer ist Ansprechperson?", (
        Field("contact_name", "Name", autocomplete="name"),
        Field("contact_email", "E-Mail-Adresse", "email", autocomplete="email"),
        Field("contact_phone", "Telefon", autocomplete="tel"),
        Field("share_contact", "Kontaktangaben weitergeben", "checkboxes",
              options={"ja": "Passende Bildungsanbieter dürfen meine Kontaktangaben sehen"}),
    )),
)
STEP_BY_SLUG = {s.slug: s for s in STEPS}


def next_slug(slug: str) -> str:
    index = [s.slug for s in STEPS].index(slug)
    return STEPS[index + 1].slug if index + 1 < len(STEPS) else "pruefen"


def parse_step(step: Step, form, resolve_place) -> tuple[dict[str, Any], FormErrors]:
    """The step's answers (as kept in the draft) and errors that name each field."""
    errors = FormErrors()
    answers: dict[str, Any] = {}
    for f in step.fields:
        if f.kind == "checkboxes":
            values = [v for v in form.getlist(f.id) if v in f.options]
            if f.required and not values:
                errors.add(f.id, f"Wählen Sie bei „{f.label}“ mindestens eine Möglichkeit aus.")
            answers[f.id] = values
            continue
        raw = _text(form.get(f.id), 20_000 if f.kind == "textarea" else 300)
        if f.required and not raw:
            errors.add(f.id, f"Geben Sie „{f.label}“ an." if f.kind != "radios"
                       else f"Wählen Sie bei „{f.label}“ eine Antwort aus.")
            answers[f.id] = raw
            continue
        if f.kind == "radios" and raw and raw not in f.options:
            errors.add(f.id, f"Wählen Sie bei „{f.label}“ eine der angebotenen Antworten aus.")
        if f.kind == "email" and raw and not EMAIL.match(raw):
            errors.add(f.id, "Geben Sie eine E-Mail-Adresse im Format name@beispiel.de an.")
        answers[f.id] = raw
    if step.slug == "bedarf":
        _number(answers["participants"], "participants", "Die Zahl der Teilnehmenden", errors, minimum=1,
                maximum=10_000, integer=True)
    if step.slug == "betrieb":
        _number(answers["employees"], "employees", "Die Zahl der Beschäftigten", errors, minimum=1,
                maximum=1_000_000, integer=True)
        if answers["place"] and not errors.for_field("place"):
            place = resolve_place(answers["place"])
            if place is None:
                errors.add("place", "Diesen Ort kennen wir nicht. Geben Sie Postleitzahl und Ort an, "
                                    "zum Beispiel „21335 Lüneburg“.")
            else:
                answers["place_resolved"] = {"name": place.name, "lat": place.lat, "lon": place.lon,
                                             "zip": place.zip}
    if step.slug == "zeit":
        start = _date(answers["start_from"], "start_from", "„Beginn frühestens“", errors)
        end = _date(answers["start_to"], "start_to", "„Beginn spätestens“", errors)
        if start and start < date.today():
            errors.add("start_from", "„Beginn frühestens“ darf nicht in der Vergangenheit liegen.")
        if start and end and end < start:
            errors.add("start_to", "„Beginn spätestens“ muss nach „Beginn frühestens“ liegen.")
    if step.slug == "budget":
        _number(answers["max_price_eur"], "max_price_eur", "Der Höchstpreis", errors, maximum=1_000_000)
    return answers, errors


def defaults() -> dict[str, Any]:
    today = date.today()
    return {"start_from": (today + timedelta(days=14)).isoformat(),
            "start_to": (today + timedelta(days=120)).isoformat(), "formats": ["presence"], "schedules": [],
            "max_distance_km": "50", "funding_required": "nein", "share_contact": []}


def missing_step(draft: dict) -> str | None:
    """The first step whose answers are not complete (a stale or skipped step)."""
    for step in STEPS:
        answers, errors = parse_step(step, _DraftForm(draft), lambda _t: _resolved(draft))
        if errors:
            return step.slug
    return None


def _resolved(draft: dict):
    from runtime.places import Place

    p = draft.get("place_resolved")
    return Place(p["name"], p["lat"], p["lon"], p.get("zip")) if p else None


class _DraftForm:
    """A draft read back through the same checks as a submitted form."""

    def __init__(self, draft: dict) -> None:
        self.draft = draft

    def get(self, key: str) -> Any:
        value = self.draft.get(key)
        return value if isinstance(value, str) else None

    def getlist(self, key: str) -> list[str]:
        value = self.draft.get(key)
        return value if isinstance(value, list) else []


def demand_body(draft: dict) -> dict:
    place = draft["place_resolved"]
    contact = {k: v for k, v in (("name", draft.get("contact_name")), ("email", draft.get("contact_email")),
                                 ("phone", draft.get("contact_phone"))) if v}
    employer: dict[str, Any] = {"name": draft["employer_name"], "city": place["name"],
                                "lat": place["lat"], "lon": place["lon"],
                                "share_contact": "ja" in draft.get("share_contact", [])}
    if place.get("zip"):
        employer["zip"] = place["zip"]
    if draft.get("employees"):
        employer["employees"] = int(float(draft["employees"]))
    if contact:
        employer["contact"] = contact
    return {
        "employer": employer, "title": draft["title"], "description": draft.get("description", ""),
        "skills": [s.strip() for s in (draft.get("skills") or "").split(",") if s.strip()][:100],
        "participants": int(float(draft["participants"])), "start_from": draft["start_from"],
        "start_to": draft["start_to"], "formats": draft["formats"], "schedules": draft.get("schedules", []),
        "max_distance_km": float(draft["max_distance_km"]),
        "max_price_eur": float(draft["max_price_eur"].replace(",", ".")) if draft.get("max_price_eur") else None,
        "funding_required": draft.get("funding_required") == "ja",
    }


def draft_from_demand(demand: dict) -> dict:
    """An existing demand as draft answers (to edit it with the same steps)."""
    e = demand.get("employer", {})
    contact = e.get("contact") or {}
    return {
        "title": demand.get("title", ""), "description": demand.get("description", ""),
        "skills": ", ".join(demand.get("skills", [])), "participants": str(demand.get("participants", "")),
        "employer_name": e.get("name", ""), "employees": str(e["employees"]) if e.get("employees") else "",
        "place": f"{e.get('zip') or ''} {e.get('city') or ''}".strip(),
        "place_resolved": {"name": e.get("city") or "", "lat": e.get("lat"), "lon": e.get("lon"), "zip": e.get("zip")},
        "start_from": demand.get("start_from", ""), "start_to": demand.get("start_to", ""),
        "formats": demand.get("formats", []), "schedules": demand.get("schedules", []),
        "max_distance_km": str(int(demand.get("max_distance_km", 50))),
        "max_price_eur": f"{demand['max_price_eur']:g}" if demand.get("max_price_eur") is not None else "",
        "funding_required": "ja" if demand.get("funding_required") else "nein",
        "contact_name": contact.get("name") or "", "contact_email": contact.get("email") or "",
        "contact_phone": contact.get("phone") or "", "share_contact": ["ja"] if e.get("share_contact") else [],
    }


def summary(draft: dict) -> list[tuple[str, str, str]]:
    """(step, question, answer) rows of the check-your-answers page."""
    def listed(values, labels):
        return ", ".join(labels[v] for v in values if v in labels) or "keine Angabe"

    return [
        ("bedarf", "Weiterbildung", draft.get("title") or "—"),
        ("bedarf", "Beschreibung", draft.get("description") or "keine Angabe"),
        ("bedarf", "Stichworte", draft.get("skills") or "keine Angabe"),
        ("bedarf", "Teilnehmende", draft.get("participants") or "—"),
        ("betrieb", "Betrieb", draft.get("employer_name") or "—"),
        ("betrieb", "Beschäftigte", draft.get("employees") or "keine Angabe"),
        ("betrieb", "Ort", draft.get("place") or "—"),
        ("zeit", "Beginn", f"{german_date(draft.get('start_from'))} bis {german_date(draft.get('start_to'))}"),
        ("zeit", "Lernformen", listed(draft.get("formats", []), FORMATS)),
        ("zeit", "Zeitmodelle", listed(draft.get("schedules", []), SCHEDULES)),
        ("zeit", "Entfernung", DISTANCES.get(draft.get("max_distance_km", ""), "—")),
        ("budget", "Höchstpreis je Person", euro(float(draft["max_price_eur"].replace(",", ".")))
         if draft.get("max_price_eur") else "keine Grenze"),
        ("budget", "Förderung nötig", "Ja" if draft.get("funding_required") == "ja" else "Nein"),
        ("kontakt", "Ansprechperson", ", ".join(v for v in (draft.get("contact_name"), draft.get("contact_email"),
                                                             draft.get("contact_phone")) if v) or "keine Angabe"),
        ("kontakt", "Kontakt weitergeben", "Ja" if "ja" in draft.get("share_contact", []) else "Nein"),
    ]
