"""The notification mail and the delivery rules, without I/O."""

from __future__ import annotations

import email
import smtplib
import uuid
from datetime import UTC, datetime
from email import policy

from services.notifications import domain
from services.notifications.mail import MatchMail, build_match_mail, reason_lines, unsubscribe_url

MATCH = {
    "id": "0b6f2a0e-8a51-4c55-9a43-3d2a3e9f0c11",
    "tenant": "hellweg-hochsauerland",
    "score": 0.87,
    "status": "active",
    "reasons": {"skills": ["SPS", "Siemens S7"], "distance_km": 12.4, "start": "2026-03-02", "qcg": True},
    "demand": {
        "id": "5d0c3b0e-1f0a-4a8e-8d89-3f3ec9b1f7a2",
        "title": "SPS-Programmierung für Instandhalter",
        "description": "Zwei Instandhalter sollen Siemens-S7-Steuerungen <programmieren> lernen.",
        "skills": ["SPS", "TIA Portal"],
        "participants": 2,
        "start_from": "2026-03-01",
        "start_to": "2026-05-31",
        "employer": {"name": "Müller Metallbau GmbH", "city": "Arnsberg", "employees": 35, "contact": None},
    },
    "offer": {
        "id": "a3e7c2d4-6b1f-4f0e-9a8d-2c4b6e8f0a13",
        "tenant": "hellweg-hochsauerland",
        "provider_id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
        "external_id": "SPS-101",
        "title": "SPS-Techniker/in Siemens S7 (TIA Portal)",
    },
}


def _mail(match=MATCH) -> email.message.EmailMessage:
    key = domain.match_key(match["id"], match["offer"]["provider_id"])
    built = build_match_mail(
        MatchMail(
            delivery_id=str(domain.delivery_id_for(key)),
            message_id=domain.message_id_for(key, "bildungsraum.example"),
            match=match,
            provider_name="Technikum Sauerland",
            recipients=["kurse@technikum.example", "info@technikum.example"],
            network_name="Bildungsraum Hellweg-Hochsauerland",
            unsubscribe_url=unsubscribe_url("http://127.0.0.1:8003/", "tok-en_123"),
        ),
        "Bildungsraum <noreply@bildungsraum.example>",
        datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
    )
    # What a receiver sees: the bytes on the wire, parsed again.
    return email.message_from_bytes(built.as_bytes(), policy=policy.default)


def test_mail_is_german_with_text_and_html_parts():
    msg = _mail()
    assert msg["Subject"] == "Neue passende Nachfrage: SPS-Programmierung für Instandhalter"
    assert msg["From"].addresses[0].addr_spec == "noreply@bildungsraum.example"
    assert [a.addr_spec for a in msg["To"].addresses] == ["kurse@technikum.example", "info@technikum.example"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for part in (text, html):
        assert "SPS-Programmierung für Instandhalter" in part
        assert "Müller Metallbau GmbH, Arnsberg" in part
        assert "01.03.2026 bis 31.05.2026" in part
        assert "SPS-Techniker/in Siemens S7 (TIA Portal)" in part
        assert "87 %" in part
        assert "12,4 km" in part
        assert "http://127.0.0.1:8003/v1/unsubscribe?token=tok-en_123" in part
    assert "Teilnehmende: 2" in text
    assert "Kontaktdaten nicht zugestimmt" in text
    # Demand text is escaped in HTML.
    assert "&lt;programmieren&gt;" in html and "<programmieren>" not in html


def test_mail_headers_carry_the_idempotency_key_and_ids():
    msg = _mail()
    assert msg["Message-ID"] == (
        f"<match.{MATCH['id']}.provider.{MATCH['offer']['provider_id']}@bildungsraum.example>")
    assert msg["X-Bildungsraum-Offer"] == MATCH["offer"]["id"]
    assert msg["X-Bildungsraum-Match"] == MATCH["id"]
    assert uuid.UUID(msg["X-Bildungsraum-Delivery"])
    assert msg["List-Unsubscribe"] == "<http://127.0.0.1:8003/v1/unsubscribe?token=tok-en_123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_employer_contact_only_when_shared():
    shared = {**MATCH, "demand": {**MATCH["demand"], "employer": {
        **MATCH["demand"]["employer"], "contact": {"name": "Petra Müller", "email": "p.mueller@example.de"}}}}
    text = _mail(shared).get_body(("plain",)).get_content()
    assert "Ansprechperson: Petra Müller" in text and "E-Mail: p.mueller@example.de" in text
    assert "nicht zugestimmt" not in text


def test_reasons_read_by_a_person():
    lines = reason_lines({"skills": ["SPS"], "distance_km": 3, "qcg": True, "custom_hint": {"a": 1}, "empty": []})
    assert lines == ["Passende Kompetenzen: SPS", "Entfernung: 3 km",
                     "Förderfähig nach QCG (§ 82 SGB III): ja", "Custom hint: a: 1"]


def test_delivery_identity_is_derived_from_the_key():
    key = domain.match_key("m", "p")
    assert key == "match:m:provider:p"
    assert domain.delivery_id_for(key) == domain.delivery_id_for(key)
    assert domain.delivery_id_for(key) != domain.delivery_id_for(domain.match_key("m", "q"))


def test_backoff_doubles_up_to_the_cap():
    assert [domain.backoff_seconds(n, 5, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_smtp_errors_are_classified():
    assert domain.classify_smtp_error(ConnectionRefusedError(111, "refused")).temporary
    assert domain.classify_smtp_error(smtplib.SMTPServerDisconnected("gone")).temporary
    assert domain.classify_smtp_error(smtplib.SMTPDataError(451, b"try later")).temporary
    final = domain.classify_smtp_error(smtplib.SMTPDataError(554, b"rejected"))
    assert not final.temporary and final.code == 554
    refused = domain.classify_smtp_error(smtplib.SMTPRecipientsRefused({"a@x.de": (550, b"no such user")}))
    assert not refused.temporary and refused.code == 550
    greylisted = domain.classify_smtp_error(smtplib.SMTPRecipientsRefused({"a@x.de": (450, b"greylisted")}))
    assert greylisted.temporary
