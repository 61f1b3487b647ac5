"""What the portal's pages say and check: German labels for the platform's codes, the search and
demand forms (parsed and checked with messages that name the field and say how to fix it), the
completeness of an offer, the employer's own cost under § 82 SGB III, calendar and schema.org
views of an offer. Plain rules, no I/O."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

FORMATS = {"presence": "Präsenz vor Ort", "online": "Online (live)", "hybrid": "Hybrid",
           "blended": "Gemischt (Blended Learning)", "distance": "Fernunterricht"}
SCHEDULES = {"full_time": "Vollzeit", "part_time": "Teilzeit", "evening": "Abends", "weekend": "Am Wochenende",
             "flexible": "Zeitlich flexibel"}
QUALIFICATIONS = {"certificate": "Zertifikatslehrgang", "partial_qualification": "Teilqualifikation",
                  "retraining": "Umschulung", "advancement": "Aufstiegsfortbildung",
                  "adaptation": "Anpassungsweiterbildung", "language": "Sprachkurs"}
FUNDINGS = {"bildungsgutschein": "Bildungsgutschein", "qcg": "Förderung für Beschäftigte (§ 82 SGB III)",
            "aufstiegsbafoeg": "Aufstiegs-BAföG"}
RADII = (25, 50, 100, 200)  # as the national course search
MAX_OFFSET_PAGE = 50  # the catalog pages by offset up to here, by cursor beyond
ROLE_NAMES = {"operator": "Plattformbetrieb", "network_admin": "Netzwerkverwaltung", "counselor": "Beratung",
              "provider": "Bildungsanbieter", "employer": "Arbeitgeber"}
ROLE_HOME = {"operator": "/betrieb/netzwerke", "network_admin": "/netzwerk", "counselor": "/beratung",
             "provider": "/anbieter", "employer": "/arbeitgeber"}
ROLE_ORDER = ("operator", "network_admin", "counselor", "provider", "employer")

# The audit log's actions as a person reads them (identity's and the catalog's).
AUDIT_ACTIONS = {"tenant.provisioned": "Netzwerk angelegt", "tenant.changed": "Netzwerk geändert",
                 "member.invited": "Mitglied eingeladen", "member.removed": "Mitglied entfernt",
                 "sharing.set": "Freigabe für andere Netzwerke geändert",
                 "provider.members_set": "Mitglieder eines Bildungsanbieters festgelegt"}
INVITABLE_ROLES = {"provider": "Bildungsanbieter", "employer": "Arbeitgeber", "counselor": "Beratung",
                   "network_admin": "Netzwerkverwaltung"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def audit_line(entry: dict, provider_names: dict[str, str], tenant_names: dict[str, str]) -> str:
    """One audit entry as a sentence: names, never ids."""
    action, details, target = entry.get("action"), entry.get("details") or {}, entry.get("target", "")
    if action == "member.invited":
        role = ROLE_NAMES.get(details.get("role"), "Mitglied")
        return f"{target} eingeladen ({role})"
    if action == "member.removed":
        return "Ein Mitglied entfernt"
    if action == "sharing.set":
        networks = [tenant_names.get(n, n) for n in details.get("networks", [])]
        return ("Angebote geteilt mit: " + ", ".join(networks)) if networks else \
            "Angebote mit keinem anderen Netzwerk mehr geteilt"
    if action == "provider.members_set":
        count = len(details.get("members", []))
        who = "einer Person" if count == 1 else f"{count} Personen"
        return f"„{provider_names.get(target, 'Ein Bildungsanbieter')}“ wird jetzt von {who} vertreten"
    if action in ("tenant.provisioned", "tenant.changed"):
        name = details.get("name") or tenant_names.get(target, "das Netzwerk")
        return f"{AUDIT_ACTIONS[action]}: {name}"
    return AUDIT_ACTIONS.get(action, "Verwaltungsaktion")


def german_datetime(value: str | None) -> str:
    if not value:
        return "—"
    moment = datetime.fromisoformat(value)
    return f"{german_date(moment.date())}, {moment:%H:%M} Uhr"


def invitation(form: Any, provider_ids: set[str]) -> tuple[dict, dict, FormErrors]:
    """The invite form's values (to show again), identity's body, and the errors that name each field."""
    values = {k: (form.get(k) or "").strip() for k in ("email", "first_name", "last_name", "role", "firm")}
    values["providers"] = [p for p in form.getlist("providers") if p]
    errors = FormErrors()
    if not _EMAIL.match(values["email"]):
        errors.add("email", "Geben Sie die E-Mail-Adresse der Person an, zum Beispiel name@beispiel.de.")
    if values["role"] not in INVITABLE_ROLES:
        errors.add("role", "Wählen Sie, in welcher Rolle die Person mitarbeitet.")
    if values["role"] == "provider" and not values["providers"]:
        errors.add("providers", "Wählen Sie mindestens einen Bildungsanbieter, für den die Person handelt.")
    if any(p not in provider_ids for p in values["providers"]):
        errors.add("providers", "Wählen Sie Bildungsanbieter aus der Liste.")
    if values["role"] == "employer" and not values["firm"]:
        errors.add("firm", "Geben Sie den Betrieb an, für den die Person Bedarfe meldet.")
    body = {"email": values["email"], "first_name": values["first_name"], "last_name": values["last_name"],
            "role": values["role"]}
    if values["role"] == "provider":
        body["providers"] = values["providers"]
    if values["role"] == "employer":
        body["firm"] = values["firm"]
    return values, body, errors

MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
          "November", "Dezember")


def german_date(value: str | date | None) -> str:
    if not value:
        return "—"
    d = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    return f"{d.day}. {MONTHS[d.month - 1]} {d.year}"


def earliest(sessions: list[dict] | None) -> dict | None:
    """The session that starts first (an ISO date sorts as text), None without sessions."""
    return min(sessions, key=lambda s: s.get("start") or "") if sessions else None


def euro(value: float | None) -> str:
    if value is None:
        return "Preis auf Anfrage"
    text = f"{value:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".")
    return f"{text.removesuffix(',00')} €"


def home_of(user: dict) -> str:
    for role in ROLE_ORDER:
        if role in user.get("roles", []):
            return ROLE_HOME[role]
    return "/"


# ---- forms -------------------------------------------------------------------------------------

@dataclass
class FormErrors:
    """Errors in page order; each names its field and how to fix it (GOV.UK error summary)."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, field_id: str, message: str) -> None:
        self.items.append((field_id, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def for_field(self, field_id: str) -> str | None:
        return next((m for f, m in self.items if f == field_id), None)


def _number(raw: str | None, field_id: str, label: str, errors: FormErrors, *, minimum: float = 0,
            maximum: float = 1_000_000, integer: bool = False) -> float | int | None:
    raw = (raw or "").strip().replace(".", "").replace(",", ".") if raw and "," in raw else (raw or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        errors.add(field_id, f"{label} muss eine Zahl sein, zum Beispiel 500.")
        return None
    if not math.isfinite(value) or value < minimum or value > maximum:
        errors.add(field_id, f"{label} muss zwischen {minimum:g} und {maximum:g} liegen.")
        return None
    if integer:
        if value != int(value):
            errors.add(field_id, f"{label} muss eine ganze Zahl sein.")
            return None
        return int(value)
    return value


def _date(raw: str | None, field_id: str, label: str, errors: FormErrors) -> date | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors.add(field_id, f"{label} muss ein Datum sein, zum Beispiel 2027-03-01.")
        return None


def _choices(values: list[str], allowed: dict[str, str], field_id: str, label: str, errors: FormErrors) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        errors.add(field_id, f"Wählen Sie bei „{label}“ nur aus den angebotenen Möglichkeiten.")
    return [v for v in values if v in allowed]


def _text(raw: str | None, max_length: int) -> str:
    text = (raw or "").replace("\x00", "").strip()
    return text[:max_length]


@dataclass
class Search:
    q: str = ""
    place: str = ""
    radius: int = 50
    formats: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    qualifications: list[str] = field(default_factory=list)
    fundings: list[str] = field(default_factory=list)
    start_from: date | None = None
    start_to: date | None = None
    max_hours: float | None = None
    max_price: float | None = None
    page: int = 1
    cursor: str | None = None  # the catalog's keyset cursor, for pages past its offset limit
    lat: float | None = None
    lon: float | None = None

    @property
    def filtered(self) -> bool:
        return any([self.q, self.place, self.formats, self.schedules, self.qualifications, self.fundings,
                    self.start_from, self.start_to, self.max_hours, self.max_price])

    def catalog_params(self, page_size: int) -> list[tuple[str, Any]]:
        params: list[tuple[str, Any]] = [("page_size", page_size), ("facets", "true")]
        params.append(("cursor", self.cursor) if self.cursor else ("page", self.page))
        if self.q:
            params.append(("q", self.q))
        if self.lat is not None:
            params += [("lat", self.lat), ("lon", self.lon), ("radius_km", self.radius)]
        params += [("format", v) for v in self.formats] + [("schedule", v) for v in self.schedules]
        params += [("qualification", v) for v in self.qualifications] + [("funding", v) for v in self.fundings]
        for name, value in (("start_from", self.start_from), ("start_to", self.start_to),
                            ("max_hours", self.max_hours), ("max_price_eur", self.max_price)):
            if value is not None:
                params.append((name, value.isoformat() if isinstance(value, date) else value))
        return params

    def query_string(self, **changes: Any) -> list[tuple[str, Any]]:
        """The page's own URL parameters (for paging and facet links)."""
        pairs: list[tuple[str, Any]] = []
        for key, value in (("q", self.q), ("ort", self.place)):
            if value:
                pairs.append((key, value))
        if self.place:
            pairs.append(("umkreis", self.radius))
        pairs += [("format", v) for v in self.formats] + [("zeit", v) for v in self.schedules]
        pairs += [("art", v) for v in self.qualifications] + [("foerderung", v) for v in self.fundings]
        for key, value in (("beginn_ab", self.start_from), ("beginn_bis", self.start_to),
                           ("dauer_max", self.max_hours), ("preis_max", self.max_price)):
            if value is not None:
                pairs.append((key, value.isoformat() if isinstance(value, date) else f"{value:g}"))
        page = changes.get("page", 1)
        if page != 1:
            pairs.append(("seite", page))
        if changes.get("cursor"):
            pairs.append(("weiter", changes["cursor"]))
        return pairs


def parse_search(params, resolve_place) -> tuple[Search, FormErrors]:
    errors = FormErrors()
    s = Search(q=_text(params.get("q"), 200), place=_text(params.get("ort"), 100))
    radius = _number(params.get("umkreis"), "umkreis", "Der Umkreis", errors, minimum=25, maximum=200, integer=True)
    s.radius = radius if radius in RADII else 50
    s.formats = _choices(params.getlist("format"), FORMATS, "format", "Lernform", errors)
    s.schedules = _choices(params.getlist("zeit"), SCHEDULES, "zeit", "Zeitmodell", errors)
    s.qualifications = _choices(params.getlist("art"), QUALIFICATIONS, "art", "Abschluss", errors)
    s.fundings = _choices(params.getlist("foerderung"), FUNDINGS, "foerderung", "Förderung", errors)
    s.start_from = _date(params.get("beginn_ab"), "beginn_ab", "„Beginn frühestens“", errors)
    s.start_to = _date(params.get("beginn_bis"), "beginn_bis", "„Beginn spätestens“", errors)
    if s.start_from and s.start_to and s.start_to < s.start_from:
        errors.add("beginn_bis", "„Beginn spätestens“ muss nach „Beginn frühestens“ liegen.")
    s.max_hours = _number(params.get("dauer_max"), "dauer_max", "Die höchste Dauer", errors, minimum=1, maximum=10000)
    s.max_price = _number(params.get("preis_max"), "preis_max", "Der höchste Preis", errors, maximum=1_000_000)
    page = _number(params.get("seite"), "seite", "Die Seite", errors, minimum=1, maximum=10_000, integer=True)
    s.page = page or 1
    cursor = _text(params.get("weiter"), 200)
    s.cursor = cursor or None
    if s.page > MAX_OFFSET_PAGE and not s.cursor:
        errors.add("seite", "So weit lässt sich nicht blättern. Grenzen Sie die Suche mit Filtern ein.")
    if s.place:
        place = resolve_place(s.place)
        if place is None:
            errors.add("ort", "Diesen Ort kennen wir nicht. Geben Sie einen Ort oder Postleitzahl und Ort an, "
                              "zum Beispiel „21335 Lüneburg“.")
        else:
            s.lat, s.lon = place.lat, place.lon
    return s, errors


# ---- offers ------------------------------------------------------------------------------------

COMPLETENESS = (  # the fields that help matching and searching, and why, in the provider's words
    ("description", "Beschreibung mit mindestens 200 Zeichen", lambda o: len(o.get("description") or "") >= 200),
    ("skills", "mindestens drei Kompetenzen (Schlagworte)", lambda o: len(o.get("skills") or []) >= 3),
    ("hours", "Dauer in Unterrichtsstunden", lambda o: o.get("hours") is not None),
    ("price_eur", "Preis", lambda o: o.get("price_eur") is not None),
    ("sessions", "ein Termin in der Zukunft", lambda o: any(
        str(s.get("start")) >= date.today().isoformat() for s in o.get("sessions") or [])),
    ("funding", "Angabe zur Förderung", lambda o: any((o.get("funding") or {}).values())),
    ("occupation", "Berufskennziffer (KldB) oder ESCO-Bezug", lambda o: bool(o.get("occupation_codes")
                                                                             or o.get("esco_uris"))),
)


def completeness(offer: dict) -> tuple[int, list[str]]:
    """Percentage of helpful fields filled, and what is missing."""
    missing = [label for _, label, check in COMPLETENESS if not check(offer)]
    return round(100 * (len(COMPLETENESS) - len(missing)) / len(COMPLETENESS)), missing


def employer_cost(price: float | None, employees: int | None, qcg: bool) -> tuple[float | None, str]:
    """The employer's own share of the course fee under § 82 SGB III, and how it was reached."""
    if price is None:
        return None, "Preis auf Anfrage"
    if not qcg:
        return price, "keine Förderung nach § 82 SGB III für dieses Angebot"
    if employees is None:
        return None, "Ihr Anteil hängt von der Zahl Ihrer Beschäftigten ab"
    if employees < 50:
        return 0.0, "unter 50 Beschäftigte: die Agentur für Arbeit trägt die Lehrgangskosten ganz"
    if employees < 500:
        return price * 0.5, "50 bis 499 Beschäftigte: Sie tragen die Hälfte (für Beschäftigte ab 45 Jahren nichts)"
    return price * 0.75, "ab 500 Beschäftigten: Sie tragen drei Viertel"


def reasons_text(reasons: dict) -> list[str]:
    """The matching service's reasons as sentences a person reads."""
    lines = []
    if reasons.get("skills"):
        lines.append("Passt zu: " + ", ".join(reasons["skills"]))
    if reasons.get("start"):
        where = f" in {reasons['place']}" if reasons.get("place") else ""
        lines.append(f"Beginnt am {german_date(reasons['start'])}{where}")
    if reasons.get("distance_km") is not None:
        lines.append(f"{round(reasons['distance_km']):d} km von Ihrem Betrieb entfernt")
    elif reasons.get("format") in ("online", "distance"):
        lines.append(f"{FORMATS[reasons['format']]}: ohne Anfahrt")
    if reasons.get("schedule_preferred"):
        lines.append("Im gewünschten Zeitmodell")
    funding = reasons.get("funding") or {}
    if funding.get("qcg"):
        lines.append("Förderfähig nach § 82 SGB III")
    if reasons.get("price_eur") is not None:  # the own cost after § 82 is shown beside, not repeated here
        lines.append(f"Preis {euro(reasons['price_eur'])} je Person")
    return lines


def offer_jsonld(offer: dict, url: str, provider_name: str | None) -> str:
    """schema.org Course with one CourseInstance per date, safe inside a <script> element."""
    instances = []
    for s in offer.get("sessions") or []:
        instance: dict[str, Any] = {"@type": "CourseInstance", "startDate": s.get("start"),
                                    "courseMode": offer.get("format")}
        if s.get("end"):
            instance["endDate"] = s["end"]
        loc = s.get("location")
        if loc:
            instance["location"] = {"@type": "Place", "address": {
                "@type": "PostalAddress", "postalCode": loc.get("zip"), "addressLocality": loc.get("city"),
                "addressCountry": "DE"}, "geo": {"@type": "GeoCoordinates", "latitude": loc.get("lat"),
                                                 "longitude": loc.get("lon")}}
        instances.append(instance)
    data: dict[str, Any] = {"@context": "https://schema.org", "@type": "Course", "name": offer.get("title"),
                            "description": offer.get("description"), "url": url,
                            "inLanguage": offer.get("language", "de"), "hasCourseInstance": instances}
    if provider_name:
        data["provider"] = {"@type": "Organization", "name": provider_name}
    if offer.get("price_eur") is not None:
        data["offers"] = {"@type": "Offer", "price": offer["price_eur"], "priceCurrency": "EUR",
                          "category": "Paid"}
    if offer.get("skills"):
        data["teaches"] = offer["skills"]
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def offer_calendar(offer: dict, url: str, provider_name: str | None) -> bytes:
    """Every date of the offer as an iCalendar file (RFC 5545), built by the icalendar library."""
    from datetime import timedelta

    from icalendar import Calendar, Event

    cal = Calendar()
    cal.add("prodid", "-//Bildungsraum//Portal//DE")
    cal.add("version", "2.0")
    for index, s in enumerate(offer.get("sessions") or []):
        event = Event()
        event.add("uid", f"{offer['id']}-{index}@bildungsraum")
        event.add("summary", offer.get("title", "Weiterbildung"))
        start = date.fromisoformat(s["start"])
        end = date.fromisoformat(s["end"]) if s.get("end") else start
        event.add("dtstart", start)
        event.add("dtend", end + timedelta(days=1))  # all-day events end the day after
        event.add("dtstamp", datetime.now().astimezone())
        loc = s.get("location")
        if loc:
            event.add("location", f"{loc.get('zip', '')} {loc.get('city', '')}".strip())
        event.add("description", f"{provider_name or ''}\n{url}".strip())
        event.add("url", url)
        cal.add_component(event)
    return cal.to_ical()
