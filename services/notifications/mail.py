"""The e-mails themselves: German text, a plain-text and an HTML part. No I/O."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class MatchMail:
    """What a provider's 'new matching demand' mail is made of."""

    delivery_id: str
    message_id: str
    match: dict[str, Any]  # the MatchFound payload (match-state.v1)
    provider_name: str
    recipients: list[str]
    network_name: str | None
    unsubscribe_url: str


def unsubscribe_url(public_base_url: str, token: str) -> str:
    return f"{public_base_url.rstrip('/')}/v1/unsubscribe?token={quote(token)}"


def _date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10]).strftime("%d.%m.%Y")
    except ValueError:
        return value


def _number(value: float) -> str:
    text = f"{value:.1f}" if value != int(value) else str(int(value))
    return text.replace(".", ",")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "ja" if value else "nein"
    if isinstance(value, float):
        return _number(round(value, 2))
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, str) and len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-":
        return _date(value) or value
    return str(value)


# Reasons a matcher may give, with how a person reads them; other keys are shown as they come.
_REASON_LABELS = {
    "skills": "Passende Kompetenzen",
    "matched_skills": "Passende Kompetenzen",
    "distance_km": "Entfernung",
    "start": "Beginn",
    "session_start": "Beginn",
    "first_start": "Beginn",
    "format": "Format",
    "schedule": "Zeitmodell",
    "funding": "Förderung",
    "qcg": "Förderfähig nach QCG (§ 82 SGB III)",
    "text": "Inhaltliche Übereinstimmung",
    "semantic": "Inhaltliche Nähe",
    "price_eur": "Preis",
    "employer_cost_eur": "Kosten für den Arbeitgeber nach Förderung",
}


def reason_lines(reasons: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in reasons.items():
        if value is None or value == [] or value == {}:
            continue
        label = _REASON_LABELS.get(key, key.replace("_", " ").capitalize())
        text = _value(value)
        if key == "distance_km" and isinstance(value, (int, float)):
            text = f"{_number(round(float(value), 1))} km"
        elif key in ("price_eur", "employer_cost_eur") and isinstance(value, (int, float)):
            text = f"{_number(round(float(value), 2))} €"
        lines.append(f"{label}: {text}")
    return lines


def _score(score: float) -> str:
    if 0 <= score <= 1:
        return f"{round(score * 100)} %"
    return _number(round(score, 2))


def subject(match: dict[str, Any]) -> str:
    return f"Neue passende Nachfrage: {match['demand']['title']}"


def _facts(match: dict[str, Any]) -> list[tuple[str, str]]:
    demand, offer = match["demand"], match["offer"]
    employer = demand.get("employer") or {}
    who = employer.get("name", "")
    if employer.get("city"):
        who += f", {employer['city']}"
    if employer.get("employees"):
        who += f" ({employer['employees']} Beschäftigte)"
    facts = [("Nachfrage", demand["title"]), ("Arbeitgeber", who)]
    if demand.get("participants"):
        facts.append(("Teilnehmende", str(demand["participants"])))
    start_from, start_to = _date(demand.get("start_from")), _date(demand.get("start_to"))
    if start_from or start_to:
        window = f"{start_from} bis {start_to}" if start_from and start_to else (start_from or f"bis {start_to}")
        facts.append(("Gewünschter Beginn", window))
    if demand.get("skills"):
        facts.append(("Gesuchte Kompetenzen", ", ".join(demand["skills"])))
    external = f" ({offer['external_id']})" if offer.get("external_id") else ""
    facts.append(("Ihr passendes Angebot", offer["title"] + external))
    if isinstance(match.get("score"), (int, float)):
        facts.append(("Übereinstimmung", _score(float(match["score"]))))
    return facts


def _contact_lines(match: dict[str, Any]) -> list[str]:
    contact = (match["demand"].get("employer") or {}).get("contact")
    if not contact:
        return []
    labels = {"name": "Ansprechperson", "email": "E-Mail", "phone": "Telefon"}
    return [f"{labels.get(k, k)}: {_value(v)}" for k, v in contact.items() if v]


def render_text(mail: MatchMail) -> str:
    m = mail.match
    network = f" im {mail.network_name}" if mail.network_name else ""
    out = [
        f"Guten Tag {mail.provider_name},",
        "",
        f"eine neue Nachfrage{network} passt zu Ihrem Angebot „{m['offer']['title']}“.",
        "",
    ]
    out += [f"{label}: {value}" for label, value in _facts(m)]
    if m["demand"].get("description"):
        out += ["", "Beschreibung:", m["demand"]["description"]]
    reasons = reason_lines(m.get("reasons") or {})
    if reasons:
        out += ["", "Warum es passt:"] + [f"- {line}" for line in reasons]
    contact = _contact_lines(m)
    out += [""]
    if contact:
        out += ["Kontakt zum Arbeitgeber:"] + contact
    else:
        out += ["Der Arbeitgeber hat der Weitergabe seiner Kontaktdaten nicht zugestimmt. "
                "Bitte wenden Sie sich an Ihr regionales Netzwerk."]
    out += [
        "",
        "Mit freundlichen Grüßen",
        "Ihr Bildungsraum",
        "",
        "-- ",
        "Sie erhalten diese Nachricht, weil Ihr Angebot im Bildungsraum veröffentlicht ist.",
        f"Benachrichtigungen abbestellen: {mail.unsubscribe_url}",
        f"Angebot {m['offer']['id']} · Nachfrage {m['demand']['id']} · Zustellung {mail.delivery_id}",
    ]
    return "\n".join(out) + "\n"


def render_html(mail: MatchMail) -> str:
    e = html.escape
    m = mail.match
    network = f" im {e(mail.network_name)}" if mail.network_name else ""
    rows = "".join(
        f'<tr><th align="left" valign="top" style="padding:2px 12px 2px 0">{e(label)}</th>'
        f'<td style="padding:2px 0">{e(value)}</td></tr>'
        for label, value in _facts(m)
    )
    parts = [
        '<!DOCTYPE html><html lang="de"><head><meta charset="utf-8">',
        f"<title>{e(subject(m))}</title></head>",
        '<body style="font-family:Arial,Helvetica,sans-serif;color:#1a1a1a;max-width:640px">',
        f"<p>Guten Tag {e(mail.provider_name)},</p>",
        f"<p>eine neue Nachfrage{network} passt zu Ihrem Angebot „{e(m['offer']['title'])}“.</p>",
        f'<table role="presentation" style="border-collapse:collapse">{rows}</table>',
    ]
    if m["demand"].get("description"):
        parts.append(f"<h3>Beschreibung</h3><p>{e(m['demand']['description'])}</p>")
    reasons = reason_lines(m.get("reasons") or {})
    if reasons:
        parts.append("<h3>Warum es passt</h3><ul>" + "".join(f"<li>{e(r)}</li>" for r in reasons) + "</ul>")
    contact = _contact_lines(m)
    if contact:
        parts.append("<h3>Kontakt zum Arbeitgeber</h3><p>" + "<br>".join(e(c) for c in contact) + "</p>")
    else:
        parts.append("<p>Der Arbeitgeber hat der Weitergabe seiner Kontaktdaten nicht zugestimmt. "
                     "Bitte wenden Sie sich an Ihr regionales Netzwerk.</p>")
    parts += [
        "<p>Mit freundlichen Grüßen<br>Ihr Bildungsraum</p>",
        '<hr><p style="font-size:12px;color:#555">Sie erhalten diese Nachricht, weil Ihr Angebot im '
        f'Bildungsraum veröffentlicht ist. <a href="{e(mail.unsubscribe_url)}">Benachrichtigungen abbestellen</a>.'
        "</p></body></html>",
    ]
    return "".join(parts)


def build_match_mail(mail: MatchMail, mail_from: str, now: datetime) -> EmailMessage:
    m = mail.match
    msg = EmailMessage(policy=SMTP)
    name, addr = parseaddr(mail_from)
    local, _, domain = addr.partition("@")
    msg["From"] = Address(display_name=name, username=local, domain=domain)
    msg["To"] = ", ".join(mail.recipients)
    msg["Subject"] = subject(m)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = mail.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["List-Unsubscribe"] = f"<{mail.unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Bildungsraum-Delivery"] = mail.delivery_id
    msg["X-Bildungsraum-Match"] = m["id"]
    msg["X-Bildungsraum-Offer"] = m["offer"]["id"]
    msg["X-Bildungsraum-Demand"] = m["demand"]["id"]
    msg.set_content(render_text(mail), charset="utf-8")
    msg.add_alternative(render_html(mail), subtype="html", charset="utf-8")
    return msg
