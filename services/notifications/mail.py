"""The e-mails themselves: German text, plain-text and HTML parts rendered from Jinja2 templates
(``templates/``; HTML autoescaped), branded per network. No I/O.

A person reads these: every value is turned into German words here (dates as 20.03.2027, formats,
funding), and a reason or field this module does not know is left out rather than shown raw.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
        undefined=StrictUndefined, trim_blocks=False, keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class Branding:
    """What a network shows in its mails (from identity.tenants.v1, with fallbacks)."""

    network_name: str
    imprint_url: str
    privacy_url: str
    logo_url: str | None = None


@dataclass(frozen=True)
class Envelope:
    """What every mail has besides its content."""

    delivery_id: str
    message_id: str
    recipients: list[str]
    branding: Branding
    unsubscribe_url: str | None
    headers: dict[str, str] = field(default_factory=dict)  # X-Bildungsraum-*: for machines, not people


# --- values a person reads ----------------------------------------------------------------------

def german_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10]).strftime("%d.%m.%Y")
    except ValueError:
        return None


def german_number(value: float, digits: int = 1) -> str:
    rounded = round(float(value), digits)
    text = str(int(rounded)) if rounded == int(rounded) else f"{rounded:.{digits}f}"
    return text.replace(".", ",")


def euros(value: float) -> str:
    rounded = round(float(value), 2)
    if rounded == int(rounded):
        return f"{int(rounded):,} €".replace(",", ".")
    return f"{rounded:,.2f} €".replace(",", "X").replace(".", ",").replace("X", ".")


FORMATS = {"presence": "Präsenz", "online": "Online", "hybrid": "Hybrid", "blended": "Blended Learning",
           "distance": "Fernunterricht"}
SCHEDULES = {"full_time": "Vollzeit", "part_time": "Teilzeit", "evening": "abends", "weekend": "am Wochenende",
             "flexible": "flexibel"}
FUNDING = {"qcg": "förderfähig nach § 82 SGB III (Qualifizierungschancengesetz)",
           "bildungsgutschein": "mit Bildungsgutschein förderbar (AZAV-zugelassen)",
           "aufstiegsbafoeg": "förderfähig mit Aufstiegs-BAföG"}


def _skills(value: Any) -> str | None:
    if isinstance(value, list):
        names = [str(v) for v in value if isinstance(v, str) and v]
        return ", ".join(names) or None
    return None


def reason_lines(reasons: Any) -> list[str]:
    """The matcher's reasons in plain German. A list of sentences is taken as it comes; of a
    mapping, only what is known is shown."""
    if isinstance(reasons, list):
        return [r for r in reasons if isinstance(r, str) and r.strip()]
    if not isinstance(reasons, dict):
        return []
    lines: list[str] = []
    skills = _skills(reasons.get("skills") or reasons.get("matched_skills"))
    if skills:
        lines.append(f"Passende Kompetenzen: {skills}")
    distance = reasons.get("distance_km")
    if isinstance(distance, (int, float)) and not isinstance(distance, bool):
        lines.append(f"Entfernung: {german_number(distance)} km")
    start = german_date(reasons.get("start") or reasons.get("session_start") or reasons.get("first_start"))
    if start:
        lines.append(f"Beginn: {start}")
    if isinstance(reasons.get("place"), str) and reasons["place"]:
        lines.append(f"Ort: {reasons['place']}")
    if reasons.get("format") in FORMATS:
        lines.append(f"Form: {FORMATS[reasons['format']]}")
    if reasons.get("schedule_preferred") is True:
        lines.append("Zeitmodell: wie gewünscht")
    price = reasons.get("price_eur")
    if isinstance(price, (int, float)) and not isinstance(price, bool):
        lines.append(f"Preis: {euros(price)} je Teilnehmerin oder Teilnehmer")
    funding = reasons.get("funding")
    flags = [key for key, on in funding.items() if on is True and key in FUNDING] if isinstance(funding, dict) else []
    if reasons.get("qcg") is True and "qcg" not in flags:
        flags.insert(0, "qcg")
    lines += [f"Förderung: {FUNDING[key]}" for key in flags]
    cost = reasons.get("employer_cost_eur_after_qcg", reasons.get("employer_cost_eur"))
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        lines.append(f"Kosten für den Arbeitgeber nach Förderung: {euros(cost)} je Teilnehmerin oder Teilnehmer")
    return lines


def _relevance(score: Any) -> str | None:
    if isinstance(score, (int, float)) and 0 <= score <= 1:
        return f"{round(score * 100)} %"
    return None


def contact_lines(match: dict[str, Any]) -> list[str]:
    """The employer's contact, only where the employer consented (matching sends it only then;
    an explicit consent flag of False hides it even if a contact came along)."""
    demand = match.get("demand") or {}
    employer = demand.get("employer") or {}
    consent = match.get("consent", employer.get("share_contact", demand.get("share_contact")))
    contact = employer.get("contact") or match.get("contact")
    if consent is False or not isinstance(contact, dict):
        return []
    labels = (("name", "Ansprechperson"), ("email", "E-Mail"), ("phone", "Telefon"))
    return [f"{label}: {contact[key]}" for key, label in labels if isinstance(contact.get(key), str) and contact[key]]


def _employer_line(employer: dict[str, Any]) -> str:
    who = employer.get("name") or "ein Arbeitgeber"
    if employer.get("city"):
        who += f", {employer['city']}"
    if isinstance(employer.get("employees"), int):
        who += f" ({employer['employees']} Beschäftigte)"
    return who


def demand_facts(match: dict[str, Any]) -> list[tuple[str, str]]:
    demand, offer = match.get("demand") or {}, match.get("offer") or {}
    facts = [("Bedarf", demand.get("title", "")), ("Arbeitgeber", _employer_line(demand.get("employer") or {}))]
    if isinstance(demand.get("participants"), int):
        facts.append(("Teilnehmende", str(demand["participants"])))
    start_from, start_to = german_date(demand.get("start_from")), german_date(demand.get("start_to"))
    if start_from and start_to:
        facts.append(("Gewünschter Beginn", f"{start_from} bis {start_to}"))
    elif start_from or start_to:
        facts.append(("Gewünschter Beginn", f"ab {start_from}" if start_from else f"bis {start_to}"))
    skills = _skills(demand.get("skills"))
    if skills:
        facts.append(("Gesuchte Kompetenzen", skills))
    if offer.get("title"):
        facts.append(("Ihr passendes Angebot", offer["title"]))
    relevance = _relevance(match.get("score"))
    if relevance:
        facts.append(("Übereinstimmung", relevance))
    return facts


def _match_item(match: dict[str, Any], link: str | None) -> dict[str, Any]:
    return {
        "heading": (match.get("demand") or {}).get("title", ""),
        "facts": demand_facts(match),
        "description": (match.get("demand") or {}).get("description"),
        "reasons": reason_lines(match.get("reasons")),
        "contact": contact_lines(match),
        "show_contact_note": True,
        "link": link,
        "link_label": "Bedarf im Portal ansehen",
    }


def demand_link(portal_base_url: str, demand_id: str) -> str:
    """The portal's page of a demand matched to the provider's offers."""
    return f"{portal_base_url.rstrip('/')}/anbieter/bedarfe/{demand_id}"


def offer_link(portal_base_url: str, demand_id: str) -> str:
    """The portal's page of an employer's demand with its matching offers."""
    return f"{portal_base_url.rstrip('/')}/arbeitgeber/bedarfe/{demand_id}"


# --- the messages -------------------------------------------------------------------------------

def match_subject(match: dict[str, Any]) -> str:
    return f"Neuer passender Bedarf: {match['demand']['title']}"


def _intro(match: dict[str, Any], recipient_network: str, demand_network: str | None) -> str:
    where = f" im Netzwerk {demand_network}" if demand_network and demand_network != recipient_network else ""
    return (f"ein Arbeitgeber{where} sucht eine Weiterbildung, die zu Ihrem Angebot "
            f"„{match['offer']['title']}“ passt.")


def build_match_mail(envelope: Envelope, match: dict[str, Any], *, greeting_name: str | None,
                     demand_network: str | None, portal_base_url: str, mail_from: str, now: datetime) -> EmailMessage:
    """A provider's mail about one matched demand."""
    context = {
        "title": match_subject(match), "greeting_name": greeting_name,
        "intro": _intro(match, envelope.branding.network_name, demand_network),
        "item": _match_item(match, demand_link(portal_base_url, match["demand"]["id"])),
        "reason_for_mail": "Sie erhalten diese Nachricht, weil Ihre Angebote im Bildungsraum veröffentlicht sind "
                           "und Sie Benachrichtigungen über passenden Bedarf eingeschaltet haben.",
    }
    return _message(envelope, match_subject(match), "match", context, mail_from, now)


def build_digest_mail(envelope: Envelope, matches: list[dict[str, Any]], *, greeting_name: str | None,
                      period_label: str, portal_base_url: str, mail_from: str, now: datetime,
                      for_employer: bool = False) -> EmailMessage:
    """One mail gathering a period's matches for one recipient."""
    count = len(matches)
    if for_employer:
        what = "ein neues passendes Angebot" if count == 1 else f"{count} neue passende Angebote"
        what_acc = what
        whose = "für Ihren Bedarf"
        items = [_alert_item(m, portal_base_url) for m in matches]
    else:
        what = "ein neuer passender Bedarf" if count == 1 else f"{count} neue passende Bedarfe"
        what_acc = "einen neuen passenden Bedarf" if count == 1 else what
        whose = "für Ihre Angebote"
        items = [_match_item(m, demand_link(portal_base_url, m["demand"]["id"])) for m in matches]
    subject = f"Zusammenfassung: {what}"
    context = {
        "title": subject, "greeting_name": greeting_name,
        "intro": f"{period_label} gab es {what_acc} {whose}:",
        "items": items,
        "reason_for_mail": "Sie erhalten diese Zusammenfassung, weil Sie Benachrichtigungen gesammelt "
                           "(täglich oder wöchentlich) bestellt haben.",
    }
    return _message(envelope, subject, "digest", context, mail_from, now)


def _alert_item(match: dict[str, Any], portal_base_url: str) -> dict[str, Any]:
    demand, offer = match["demand"], match["offer"]
    facts = [("Angebot", offer["title"]), ("Ihr Bedarf", demand["title"])]
    relevance = _relevance(match.get("score"))
    if relevance:
        facts.append(("Übereinstimmung", relevance))
    return {"heading": offer["title"], "facts": facts, "description": None,
            "reasons": reason_lines(match.get("reasons")), "contact": [], "show_contact_note": False,
            "link": offer_link(portal_base_url, demand["id"]), "link_label": "Angebote im Portal ansehen"}


def build_offer_alert_mail(envelope: Envelope, match: dict[str, Any], *, portal_base_url: str, mail_from: str,
                           now: datetime) -> EmailMessage:
    """An employer's mail about a good new offer for its open demand."""
    demand = match["demand"]
    subject = f"Neues passendes Angebot für Ihren Bedarf: {demand['title']}"
    item = _alert_item(match, portal_base_url)
    context = {"title": subject, "greeting_name": None,
               "intro": f"für Ihren Bedarf „{demand['title']}“ gibt es ein neues Angebot, das gut passt.",
               "item": item,
               "reason_for_mail": "Sie erhalten diese Nachricht, weil Sie Hinweise auf passende neue Angebote "
                                  "für Ihren Bedarf bestellt haben."}
    return _message(envelope, subject, "match", context, mail_from, now)


def _message(envelope: Envelope, subject: str, template: str, context: dict[str, Any], mail_from: str,
             now: datetime) -> EmailMessage:
    context = {**context, "brand": envelope.branding, "unsubscribe_url": envelope.unsubscribe_url}
    env = _templates()
    msg = EmailMessage(policy=SMTP)
    local, _, domain = parseaddr(mail_from)[1].partition("@")
    msg["From"] = Address(display_name=envelope.branding.network_name, username=local, domain=domain)
    msg["To"] = ", ".join(envelope.recipients)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = envelope.message_id
    msg["Auto-Submitted"] = "auto-generated"
    if envelope.unsubscribe_url:
        # RFC 8058 one-click: the mailbox provider POSTs "List-Unsubscribe=One-Click" to the URL.
        msg["List-Unsubscribe"] = f"<{envelope.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Bildungsraum-Delivery"] = envelope.delivery_id
    for header, value in envelope.headers.items():
        msg[header] = value
    msg.set_content(env.get_template(f"{template}.txt.j2").render(context), charset="utf-8")
    msg.add_alternative(env.get_template(f"{template}.html.j2").render(context), subtype="html", charset="utf-8")
    return msg


def render_page(*, title: str, text: str, action: str | None) -> str:
    """The unsubscribe pages; with ``action``, a button that POSTs the one-click form there."""
    return _templates().get_template("unsubscribe.html.j2").render(
        title=title, text=text, confirm=action is not None, action=action)
