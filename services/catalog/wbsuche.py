"""The national course search's JSON (``_embedded.termine``, as the Bundesagentur für Arbeit's
Weiterbildungssuche answers) as import records: each ``angebot`` is an offer, each ``termin`` a
dated session of it. HTML texts become plain text; epoch-millisecond dates become calendar days in
German time; a termin without ``beginn`` takes the start dates its remark lists ("Starttermine")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import lxml.etree
import lxml.html

from services.catalog.domain import Format, Qualification, Schedule
from services.catalog.openqcat import (
    FORMAT_CODES,
    FORMAT_WORDS,
    QUALIFICATION_WORDS,
    SCHEDULE_WORDS,
    Record,
    aufstiegs_bafoeg,
)

MODE = "WBSUCHE"
BERLIN = ZoneInfo("Europe/Berlin")
GERMAN_DATE = re.compile(r"\b(\d{1,2})\.(\d{1,2})\.(\d{4})\b")


class UnreadableJson(Exception):
    """Not the national course search's answer shape."""


def plain(html: Any) -> str:
    if not isinstance(html, str) or not html.strip():
        return ""
    try:
        return " ".join(lxml.html.fromstring(html).text_content().split())
    except (lxml.etree.LxmlError, ValueError):  # e.g. only a comment: no document
        return ""


def _label(value: Any) -> str:
    return (value or {}).get("bezeichnung") or "" if isinstance(value, dict) else ""


def _day(epoch_ms: Any) -> date | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(int(epoch_ms) / 1000, UTC).astimezone(BERLIN).date()


def _coded(label: str, words: tuple) -> Any:
    return next((value for word, value in words if word in label.casefold()), None)


def _format(unterrichtsform: Any) -> Format:
    """The search's own code for the form (``uf``, as open-Qcat's INSTRUCTION_FORM), else its label's words."""
    code = str(unterrichtsform.get("id")) if isinstance(unterrichtsform, dict) else ""
    return FORMAT_CODES.get(code) or _coded(_label(unterrichtsform), FORMAT_WORDS) or Format.presence


def _starts(termin: dict) -> list[tuple[date, date | None]]:
    start = _day(termin.get("beginn"))
    if start is not None:
        return [(start, _day(termin.get("ende")))]
    listed = []
    for d, m, y in GERMAN_DATE.findall(plain(termin.get("bemerkungZeit"))):
        try:
            listed.append((date(int(y), int(m), int(d)), None))
        except ValueError:
            continue
    return listed


def read(document: Any) -> Iterator[Record | str]:
    """Records of one answer: for each offer first the offer, then its sessions."""
    try:
        termine = document["_embedded"]["termine"]
        if not isinstance(termine, list):
            raise TypeError
    except (KeyError, TypeError):
        raise UnreadableJson("expected {\"_embedded\": {\"termine\": [...]}}") from None
    yield MODE
    offered: set[str] = set()
    for index, termin in enumerate(termine, start=1):
        where = f"_embedded.termine[{index - 1}]"
        try:
            angebot = termin["angebot"]
            offer_id, termin_id = str(angebot["id"]), str(termin["id"])
        except (KeyError, TypeError):
            yield Record(section="new", product_id="", where=where, error="termin without id or angebot.id")
            continue
        try:
            if offer_id not in offered:
                # taken as seen once it reads: a first termin the course cannot be read from leaves the
                # course to its next termin, not its later termine without a course
                course = Record(section="new", product_id=offer_id, where=f"{where}.angebot",
                                data=_offer(angebot, termin))
                offered.add(offer_id)
                yield course
            address = termin.get("adresse") or {}
            town, point = address.get("ortStrasse") or {}, address.get("koordinaten") or {}
            starts = _starts(termin)
            if not starts:
                raise ValueError("no date: neither beginn nor start dates in bemerkungZeit")
            price = float(termin["kostenWert"]) if termin.get("kostenWert") not in (None, "") else None
            for n, (start, end) in enumerate(starts):
                yield Record(section="new", kind="instance", course_id=offer_id, where=where,
                             product_id=termin_id if len(starts) == 1 else f"{termin_id}-{n + 1}", data={
                                 "external_id": termin_id if len(starts) == 1 else f"{termin_id}-{n + 1}",
                                 "start": start.isoformat(), "end": end.isoformat() if end else None,
                                 "price_eur": price or None,
                                 "schedule": _coded(_label(termin.get("unterrichtszeit")), SCHEDULE_WORDS),
                                 "location": {"street": address.get("strasse"), "zip": town.get("plz") or None,
                                              "city": town.get("name") or town.get("plz") or "",
                                              "lat": point.get("lat"), "lon": point.get("lon")}
                                 if (town.get("plz") or town.get("name")) else None,
                             })
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # any shape it should not have
            yield Record(section="new", kind="instance", product_id=str(termin.get("id", "")), where=where,
                         error=f"unreadable termin: {exc}")


def _offer(angebot: dict, termin: dict) -> dict:
    title = str(angebot.get("titel") or "").strip()
    if not title:
        raise ValueError("angebot without titel")
    kind = _label(angebot.get("bildungsart"))
    funding = plain(angebot.get("foerderung")).casefold()
    codes = []
    for systematik in angebot.get("systematiken") or []:
        match = re.search(r"\b(\d{5})\b", (systematik or {}).get("codeNr") or "")
        if match:
            codes.append(match.group(1))
    return {
        "external_id": str(angebot["id"]), "title": title[:500],
        "description": "\n\n".join(filter(None, (plain(angebot.get(k)) for k in (
            "inhalt", "abschlussart", "zugang", "zielgruppe"))))[:50_000],
        "skills": [s["suchwort"][:200] for s in angebot.get("suchworte") or []
                   if isinstance(s, dict) and s.get("suchwort") and s["suchwort"] != title][:100],
        "occupation_codes": codes[:20],
        "qualification": next((q for w, q in QUALIFICATION_WORDS if w in kind.casefold()), Qualification.certificate),
        "format": _format(termin.get("unterrichtsform")),
        "schedule": _coded(_label(termin.get("unterrichtszeit")), SCHEDULE_WORDS) or Schedule.full_time,
        "price_eur": (float(termin["kostenWert"]) or None) if termin.get("kostenWert") not in (None, "") else None,
        "funding": {"bildungsgutschein": "bildungsgutschein" in funding,
                    "qcg": "beschäftigte" in funding, "aufstiegsbafoeg": aufstiegs_bafoeg(funding)},
        "measure_number": termin.get("massnahmeNummer") or None,
        # taken from this termin (the course's first on the page): an offer already imported keeps them
        "_per_session": ["format", "schedule", "price_eur", "measure_number"],
        "url": angebot.get("link") if str(angebot.get("link") or "").startswith("http") else None,
    }
