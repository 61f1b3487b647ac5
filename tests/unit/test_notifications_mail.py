"""The notification mail and the delivery rules, without I/O."""

from __future__ import annotations

import email
import random
import smtplib
import uuid
from datetime import UTC, datetime
from email import policy

from services.notifications import domain, unsubscribe
from services.notifications.mail import Branding, Envelope, build_digest_mail, build_match_mail, reason_lines

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


BRAND = Branding(network_name="Bildungsraum Hellweg-Hochsauerland", imprint_url="https://hellweg.example/impressum",
                 privacy_url="https://hellweg.example/datenschutz", logo_url="https://hellweg.example/logo.png")
ADDRESS = "kurse@technikum.example"


def _mail(match=MATCH) -> email.message.EmailMessage:
    key = domain.match_key(match["id"], match["offer"]["provider_id"], ADDRESS)
    built = build_match_mail(
        Envelope(delivery_id=str(domain.delivery_id_for(key)),
                 message_id=domain.message_id_for(key, "bildungsraum.example"), recipients=[ADDRESS], branding=BRAND,
                 unsubscribe_url=unsubscribe.unsubscribe_url("http://127.0.0.1:8003/", "tok-en_123"),
                 headers={"X-Bildungsraum-Match": match["id"]}),
        match, greeting_name="Technikum Sauerland", demand_network="Bildungsraum Lüneburg",
        portal_base_url="https://portal.example/", mail_from="Bildungsraum <noreply@bildungsraum.example>",
        now=datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
    )
    # What a receiver sees: the bytes on the wire, parsed again.
    return email.message_from_bytes(built.as_bytes(), policy=policy.default)


def test_mail_is_german_branded_with_text_and_html_parts():
    msg = _mail()
    assert msg["Subject"] == "Neuer passender Bedarf: SPS-Programmierung für Instandhalter"
    assert msg["From"].addresses[0].addr_spec == "noreply@bildungsraum.example"
    assert "Bildungsraum Hellweg-Hochsauerland" in str(msg["From"])
    assert [a.addr_spec for a in msg["To"].addresses] == [ADDRESS]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for part in (text, html):
        assert "SPS-Programmierung für Instandhalter" in part
        assert "Müller Metallbau GmbH, Arnsberg (35 Beschäftigte)" in part
        assert "01.03.2026 bis 31.05.2026" in part
        assert "SPS-Techniker/in Siemens S7 (TIA Portal)" in part
        assert "Netzwerk Bildungsraum Lüneburg" in part
        assert "87 %" in part
        assert "Entfernung: 12,4 km" in part and "Beginn: 02.03.2026" in part
        assert "förderfähig nach § 82 SGB III" in part
        assert "http://127.0.0.1:8003/v1/unsubscribe?token=tok-en_123" in part
        assert "https://portal.example/anbieter/bedarfe/5d0c3b0e-1f0a-4a8e-8d89-3f3ec9b1f7a2" in part
        assert "https://hellweg.example/impressum" in part and "https://hellweg.example/datenschutz" in part
        # no raw ids or field names for a person to puzzle over
        for raw in (MATCH["offer"]["id"], MATCH["offer"]["provider_id"], "distance_km", "qcg:", "presence", "None",
                    "True", "False"):
            assert raw not in part
    assert "Teilnehmende: 2" in text
    assert "Kontaktdaten nicht zugestimmt" in text
    assert 'src="https://hellweg.example/logo.png"' in html
    # Demand text is escaped in HTML by the template engine.
    assert "&lt;programmieren&gt;" in html and "<programmieren>" not in html


def test_mail_headers_carry_the_idempotency_key_and_one_click_unsubscribe():
    msg = _mail()
    assert msg["Message-ID"] == domain.message_id_for(
        domain.match_key(MATCH["id"], MATCH["offer"]["provider_id"], ADDRESS), "bildungsraum.example")
    assert msg["Message-ID"].startswith("<match.") and msg["Message-ID"].count("@") == 1
    assert msg["X-Bildungsraum-Match"] == MATCH["id"]
    assert uuid.UUID(msg["X-Bildungsraum-Delivery"])
    assert msg["List-Unsubscribe"] == "<http://127.0.0.1:8003/v1/unsubscribe?token=tok-en_123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_employer_contact_only_with_consent():
    contact = {"name": "Petra Müller", "email": "p.mueller@example.de"}
    shared = {**MATCH, "demand": {**MATCH["demand"], "employer": {**MATCH["demand"]["employer"], "contact": contact}}}
    text = _mail(shared).get_body(("plain",)).get_content()
    assert "Ansprechperson: Petra Müller" in text and "E-Mail: p.mueller@example.de" in text
    assert "nicht zugestimmt" not in text
    refused = {**shared, "consent": False}
    text = _mail(refused).get_body(("plain",)).get_content()
    assert "Petra Müller" not in text and "nicht zugestimmt" in text


def test_reasons_read_by_a_person():
    lines = reason_lines({"skills": ["SPS"], "distance_km": 18, "start": "2027-03-20", "format": "presence",
                          "schedule_preferred": False, "price_eur": 1290.5,
                          "funding": {"qcg": True, "bildungsgutschein": False, "aufstiegsbafoeg": False},
                          "employer_cost_eur_after_qcg": 0, "custom_hint": {"a": 1}, "place": None})
    assert lines == ["Passende Kompetenzen: SPS", "Entfernung: 18 km", "Beginn: 20.03.2027", "Form: Präsenz",
                     "Preis: 1.290,50 € je Teilnehmerin oder Teilnehmer",
                     "Förderung: förderfähig nach § 82 SGB III (Qualifizierungschancengesetz)",
                     "Kosten für den Arbeitgeber nach Förderung: 0 € je Teilnehmerin oder Teilnehmer"]
    assert reason_lines(["Kurs startet im Wunschzeitraum"]) == ["Kurs startet im Wunschzeitraum"]


def test_digest_gathers_matches_in_one_message():
    second = {**MATCH, "id": str(uuid.uuid4()), "demand": {**MATCH["demand"], "id": str(uuid.uuid4()),
                                                            "title": "Staplerschein für Lagerhelfer"}}
    built = build_digest_mail(
        Envelope(delivery_id=str(uuid.uuid4()), message_id="<digest.x@bildungsraum.example>", recipients=[ADDRESS],
                 branding=BRAND, unsubscribe_url="http://n.example/v1/unsubscribe?token=t"),
        [MATCH, second], greeting_name="Technikum Sauerland", period_label="Am 20.03.2027",
        portal_base_url="https://portal.example", mail_from="noreply@bildungsraum.example",
        now=datetime(2027, 3, 20, 7, tzinfo=UTC))
    msg = email.message_from_bytes(built.as_bytes(), policy=policy.default)
    assert msg["Subject"] == "Zusammenfassung: 2 neue passende Bedarfe"
    text = msg.get_body(("plain",)).get_content()
    assert "1. SPS-Programmierung für Instandhalter" in text and "2. Staplerschein für Lagerhelfer" in text


def test_unsubscribe_tokens_are_signed_and_scoped_to_one_recipient():
    secret = "s" * 48
    me = unsubscribe.Recipient("lueneburg", "provider", str(uuid.uuid4()), ADDRESS)
    token = unsubscribe.sign(secret, me)
    assert unsubscribe.verify(secret, token) == me
    assert unsubscribe.verify("t" * 48, token) is None
    assert unsubscribe.verify(secret, token[:-2] + ("xy" if not token.endswith("xy") else "zz")) is None
    body, _, sig = token.rpartition(".")
    other = unsubscribe.sign("t" * 48, unsubscribe.Recipient("lueneburg", "provider", me.owner_id, "x@y.de"))
    assert unsubscribe.verify(secret, other.rpartition(".")[0] + "." + sig) is None


def test_delivery_identity_is_derived_from_the_key():
    key = domain.match_key("m", "p", "A@x.de")
    assert key == "match:m:provider:p:to:a@x.de"
    assert domain.delivery_id_for(key) == domain.delivery_id_for(domain.match_key("m", "p", "a@x.de"))
    assert domain.delivery_id_for(key) != domain.delivery_id_for(domain.match_key("m", "p", "b@x.de"))


def test_backoff_doubles_up_to_the_cap_with_jitter():
    rng = random.Random(7)
    for attempt, ceiling in zip(range(1, 7), [5, 10, 20, 40, 60, 60], strict=True):
        delays = {domain.backoff_seconds(attempt, 5, 60, rng) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1


def test_digest_is_due_at_the_chosen_berlin_hour():
    daily = domain.Choice("daily", digest_hour=7)
    assert domain.digest_period(daily, datetime(2027, 3, 20, 5, 59, tzinfo=UTC)) is None  # 06:59 in Berlin
    assert domain.digest_period(daily, datetime(2027, 3, 20, 6, 0, tzinfo=UTC)) == "2027-03-20"
    summer = datetime(2027, 7, 1, 5, 0, tzinfo=UTC)  # 07:00 CEST
    assert domain.digest_period(daily, summer) == "2027-07-01"
    weekly = domain.Choice("weekly", digest_hour=7, digest_weekday=5)
    assert domain.digest_period(weekly, datetime(2027, 3, 18, 12, tzinfo=UTC)) is None  # Thursday
    assert domain.digest_period(weekly, datetime(2027, 3, 19, 12, tzinfo=UTC)) == "2027-W11"
    assert domain.digest_period(domain.Choice("off"), summer) is None


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
