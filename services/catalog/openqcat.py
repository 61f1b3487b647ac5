"""open-Qcat 1.1 (the XML KURSNET accepts and provider software exports): streamed parsing and the
mapping of one ``SERVICE`` onto the offer model. No I/O besides reading the stream.

``EDUCATION type="true"`` is an offer, ``type="false"`` a dated instance (Termin) of the offer its
``COURSE_ID`` names. The parser is lxml's, hardened: no DTD loading, no entity resolution, no network,
the default depth and size limits of libxml2 (no ``huge_tree``); a document type declaration is
refused outright. Elements are freed as soon as their ``SERVICE`` is read, so memory stays flat."""

from __future__ import annotations

import multiprocessing
import os
import queue
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any

import orjson
from lxml import etree

from services.catalog.domain import Format, Qualification, Schedule


class UnreadableFile(Exception):
    """The file is not open-Qcat we can read at all (not XML, hostile, wrong root)."""


@dataclass
class Record:
    """One ``SERVICE`` (or a ``DELETE`` entry) as read, with where it stands in the file."""

    section: str            # "new" or "delete"
    product_id: str
    where: str
    kind: str = "offer"     # "offer", "instance" or "delete"
    course_id: str | None = None
    # the mapped fields; from a parsing process (ParsedApart) as their JSON, which orjson writes out as it is
    data: dict[str, Any] | orjson.Fragment = field(default_factory=dict)
    error: str | None = None

    def to_wire(self) -> tuple:
        """The record as a parsing process hands it over: a tuple of strings, the data as its JSON
        (unpickling records with their dicts cost the importer 8.8 µs a record, on the thread whose
        parts the loop waits for; such a tuple 0.3)."""
        return (self.section, self.product_id, self.where, self.kind, self.course_id, orjson.dumps(self.data),
                self.error)

    @classmethod
    def from_wire(cls, fields: tuple) -> Record:
        *head, data, error = fields
        return cls(*head, data=orjson.Fragment(data), error=error)


# INSTRUCTION_FORM: KURSNET's current codes, as the national course search lists them (its ``uf``
# parameter): 101–105 on site (Präsenzveranstaltung, Seminar, Workshop, Praxistraining, other), 201–206
# digital (Virtuelles Klassenzimmer, Online-Seminar, Online-Coaching, Selbstlernmodul, other), 301
# Blended Learning, 302 Combined Learning (on site or online, as the participant chooses), 303 Hybrid
# Learning, 304 other combined forms, 401–403 distance learning; and the 2007 ones (1–7).
FORMAT_CODES = {
    **dict.fromkeys(("101", "102", "103", "104", "105"), Format.presence),
    **dict.fromkeys(("201", "202", "203", "204", "205", "206"), Format.online),
    "301": Format.blended, "302": Format.hybrid, "303": Format.hybrid, "304": Format.blended,
    **dict.fromkeys(("401", "402", "403"), Format.distance),
    "1": Format.presence, "2": Format.distance, "3": Format.presence, "4": Format.blended,
    "5": Format.online, "6": Format.presence, "7": Format.online,
}
FORMAT_WORDS = (("hybrid", Format.hybrid), ("combined", Format.hybrid), ("blended", Format.blended),
                ("fern", Format.distance),
                ("online", Format.online), ("virtuell", Format.online), ("e-learning", Format.online),
                ("präsenz", Format.presence))
# INSTRUCTION_TIME: 1 Vollzeit, 2 Teilzeit, 3 Abend, 4 Wochenende, 5 Blockunterricht, 6 berufsbegleitend.
SCHEDULE_CODES = {"1": Schedule.full_time, "2": Schedule.part_time, "3": Schedule.evening, "4": Schedule.weekend,
                  "5": Schedule.full_time, "6": Schedule.part_time, "7": Schedule.flexible}
SCHEDULE_WORDS = (("vollzeit", Schedule.full_time), ("teilzeit", Schedule.part_time), ("abend", Schedule.evening),
                  ("wochenend", Schedule.weekend), ("flexib", Schedule.flexible))
QUALIFICATION_WORDS = (("umschulung", Qualification.retraining), ("nachholen", Qualification.retraining),
                       ("teilqualifi", Qualification.partial_qualification),
                       ("aufstieg", Qualification.advancement), ("meister", Qualification.advancement),
                       ("fachwirt", Qualification.advancement), ("sprach", Qualification.language),
                       ("deutsch", Qualification.language), ("anpassung", Qualification.adaptation),
                       ("fortbildung", Qualification.adaptation), ("qualifizierung", Qualification.adaptation))
KLDB = re.compile(r"\b([0-9]{5})(?:-[0-9]+)?\b")


# Aufstiegs-BAföG by its names; not any word beginning "aufstiegs" (the SBB's Aufstiegsstipendium is another grant)
AUFSTIEGS_BAFOEG = re.compile(r"aufstiegs-?baf(?:ö|oe)g|meister-?baf(?:ö|oe)g|\bafbg\b|aufstiegsfortbildungsförderung")


def aufstiegs_bafoeg(funding_text: str) -> bool:
    return AUFSTIEGS_BAFOEG.search(funding_text.casefold()) is not None


def _text(element: etree._Element | None, path: str | None = None) -> str | None:
    node = element.find(path) if (element is not None and path) else element
    if node is None or node.text is None:
        return None
    value = " ".join(node.text.split()) if path not in ("DESCRIPTION_LONG",) else node.text.strip()
    return value or None


def _day(value: str | None) -> date | None:
    """open-Qcat dates: ``2026-11-06T00:00:00.000+01:00`` or ``2026-11-06+01:00``: the calendar day."""
    if not value:
        return None
    match = re.match(r"^(\d{4}-\d{2}-\d{2})", value.strip())
    if not match:
        raise ValueError(f"not a date: {value!r}")
    return date.fromisoformat(match.group(1))


JAVA_OBJECT = re.compile(r"^[a-z]\w*(\.\w+)+@[0-9a-f]+$", re.IGNORECASE)  # "de.ba...BezeichnungDTO@78dc4c"


def _coded(element: etree._Element | None, codes: dict, words: tuple) -> Any:
    """A coded field: the code where we know it, else the label's words (unless the label is
    garbage such as a Java object string, as old exports carry)."""
    if element is None:
        return None
    code = (element.get("type") or "").strip()
    if code in codes:
        return codes[code]
    text = (element.text or "").strip()
    if JAVA_OBJECT.match(text):
        return None
    return next((value for word, value in words if word in text.casefold()), None)


def _place(location: etree._Element | None) -> dict | None:
    if location is None:
        return None
    zip_code, city = _text(location, "ZIP"), _text(location, "CITY")
    if not zip_code and not city:
        return None
    # a town without its postcode gets the postcode of its centre when imported (importing.py)
    return {"street": _text(location, "STREET"), "zip": zip_code, "city": city or zip_code}


def _price(service: etree._Element) -> float | None:
    amount = _text(service, "SERVICE_PRICE_DETAILS/SERVICE_PRICE/PRICE_AMOUNT")
    if amount is None:
        return None
    value = float(amount)
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError(f"PRICE_AMOUNT {amount!r} is not a price")
    return value or None  # 0.0 is open-Qcat's "not given"


def _session(service: etree._Element, education: etree._Element, product_id: str) -> dict:
    start = _day(_text(service, "SERVICE_DETAILS/SERVICE_DATE/START_DATE"))
    if start is None:
        raise ValueError("the dated instance has no SERVICE_DATE/START_DATE")
    session: dict[str, Any] = {
        "external_id": product_id, "start": start.isoformat(),
        "end": (d.isoformat() if (d := _day(_text(service, "SERVICE_DETAILS/SERVICE_DATE/END_DATE"))) else None),
        "location": _place(education.find("MODULE_COURSE/LOCATION")),
        "price_eur": _price(service),
        "schedule": _coded(education.find("EXTENDED_INFO/INSTRUCTION_TIME"), SCHEDULE_CODES, SCHEDULE_WORDS),
        "_format": _coded(education.find("EXTENDED_INFO/INSTRUCTION_FORM"), FORMAT_CODES, FORMAT_WORDS),
    }
    if session["end"] and session["end"] < session["start"]:
        raise ValueError(f"END_DATE {session['end']} lies before START_DATE {session['start']}")
    return session


def _offer(service: etree._Element, education: etree._Element, product_id: str) -> dict:
    details = service.find("SERVICE_DETAILS")
    title = _text(details, "TITLE")
    if not title:
        raise ValueError("an offer (EDUCATION type=\"true\") needs a TITLE")
    description = "\n\n".join(filter(None, (
        _text(details, "DESCRIPTION_LONG"), _text(details, "REQUIREMENTS"),
        _text(details, "TARGET_GROUP/TARGET_GROUP_TEXT"))))
    keywords = []
    for keyword in details.iterfind("KEYWORD"):
        word = _text(keyword)
        if word and word != title and len(word) <= 200 and word not in keywords:
            keywords.append(word)
    extended = education.find("EXTENDED_INFO")
    funding_text = " ".join((e.text or "") for e in extended.iterfind("FUNDING_TYPES_FEDERAL")).casefold() \
        if extended is not None else ""
    education_type = _text(extended, "EDUCATION_TYPE") if extended is not None else None
    codes = []
    for feature in service.iterfind("SERVICE_CLASSIFICATION/FEATURE"):
        match = KLDB.search(_text(feature, "FNAME") or "")
        if match and match.group(1) not in codes:
            codes.append(match.group(1))
    measure = education.findtext(".//MEASURE_NUMBER") or service.findtext(".//MEASURE_NUMBER")
    own = None
    if _text(service, "SERVICE_DETAILS/SERVICE_DATE/START_DATE"):
        own = _session(service, education, product_id)
    fmt = _coded(extended.find("INSTRUCTION_FORM") if extended is not None else None, FORMAT_CODES, FORMAT_WORDS)
    schedule = _coded(extended.find("INSTRUCTION_TIME") if extended is not None else None,
                      SCHEDULE_CODES, SCHEDULE_WORDS)
    return {
        "external_id": product_id, "title": title[:500], "description": description[:50_000],
        "skills": keywords[:100], "occupation_codes": codes[:20],
        "qualification": next((q for w, q in QUALIFICATION_WORDS if w in (education_type or "").casefold()),
                              Qualification.certificate),
        "format": fmt or Format.presence, "schedule": schedule or Schedule.full_time,
        "price_eur": _price(service),
        "funding": {"bildungsgutschein": "bildungsgutschein" in funding_text,
                    "qcg": "§ 82" in funding_text or "§82" in funding_text or "qualifizierungschancen" in funding_text,
                    "aufstiegsbafoeg": aufstiegs_bafoeg(funding_text)},
        "measure_number": " ".join(measure.split()) if measure and measure.strip() else None,
        "url": _text(education, "MIME_INFO/MIME_ELEMENT/MIME_SOURCE"),
        "_own_session": own,
    }


def read_service(service: etree._Element, section: str, where: str) -> Record:
    """One SERVICE as a record; whatever is wrong with it is the record's error, never an exception."""
    product_id = _text(service, "PRODUCT_ID") or ""
    record = Record(section=section, product_id=product_id, where=where)
    if section == "delete":
        record.kind = "delete"
        if not product_id:
            record.error = "DELETE entry without PRODUCT_ID"
        return record
    try:
        if not product_id:
            raise ValueError("SERVICE without PRODUCT_ID")
        education = service.find("SERVICE_DETAILS/SERVICE_MODULE/EDUCATION")
        if education is None:
            raise ValueError("SERVICE without SERVICE_MODULE/EDUCATION")
        kind = (education.get("type") or "").strip().lower()
        if kind == "true":
            record.data = _offer(service, education, product_id)
        elif kind == "false":
            record.kind = "instance"
            record.course_id = _text(education, "COURSE_ID")
            if not record.course_id:
                raise ValueError("a dated instance (EDUCATION type=\"false\") needs a COURSE_ID")
            record.data = _session(service, education, product_id)
        else:
            raise ValueError(f"EDUCATION type must be \"true\" or \"false\", not {education.get('type')!r}")
    except ValueError as exc:
        record.error = str(exc)
    return record


SECTIONS = {"NEW_CATALOG": "new", "NEW": "new", "DELETE": "delete"}


def reader(stream: IO[bytes]) -> Callable[[], Iterator[Record | str]]:
    """The records of a seekable file, from its start each time they are asked for."""
    def records() -> Iterator[Record | str]:
        stream.seek(0)
        return read(stream)
    return records


PART = 500  # records a parsing process hands over at a time


class ParsedApart:
    """The records of a file parsed in a process of its own, from its start each time they are asked
    for. Parsing is most of an import's Python work while it reads: in the importing process it holds
    the interpreter's lock that validating and writing need, so the import's Python work would be
    bound to one core. ``position`` is how far into the file the parsing process has read. Each
    record's ``data`` arrives as its JSON (an ``orjson.Fragment``): what the import stages."""

    def __init__(self, path: Path) -> None:
        self.path, self.position = path, 0

    def __call__(self) -> Iterator[Record | str]:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or loop inherited
        parts = context.Queue(maxsize=8)  # a few parts ahead of the importer, so memory stays flat
        process = context.Process(target=_parse_apart, args=(str(self.path), parts), daemon=True)
        process.start()
        try:
            while True:
                try:
                    part = parts.get(timeout=1)
                except queue.Empty:
                    if not process.is_alive():
                        raise UnreadableFile("the parsing process ended without finishing the file") from None
                    continue
                if part is None:
                    return
                if isinstance(part, UnreadableFile):
                    raise part
                self.position, records = part
                for record in records:
                    yield record if isinstance(record, str) else Record.from_wire(record)
        finally:  # also when the importer stops reading early
            process.kill()
            process.join()


def _parse_apart(path: str, parts: multiprocessing.Queue) -> None:
    """The parsing process: the file's records in parts with the position reached, then None."""
    importer = os.getppid()

    def hand_over(item: object) -> None:
        # A full queue waits for the importer; an importer killed outright (SIGKILL: no chance to
        # stop this process) would leave it waiting for good, so it ends once the importer is gone.
        while True:
            try:
                parts.put(item, timeout=1)
                return
            except queue.Full:
                if os.getppid() != importer:
                    parts.cancel_join_thread()  # what is still buffered for the pipe has no reader
                    raise SystemExit(0) from None

    try:
        with open(path, "rb") as stream:
            part: list[Record | str] = []
            for record in read(stream):
                part.append(record if isinstance(record, str) else record.to_wire())
                if len(part) == PART:
                    hand_over((stream.tell(), part))
                    part = []
            hand_over((stream.tell(), part))
        hand_over(None)
    except UnreadableFile as exc:
        hand_over(exc)
    except OSError as exc:
        hand_over(UnreadableFile(f"the file cannot be read: {exc}"))


# How far the parser may read past the last element acted on (a SERVICE's start or end, a section's):
# lxml keeps in memory whatever it has parsed since, about 30 bytes for each byte of small elements.
# A real SERVICE is a few KiB (a description is at most 50,000 characters); without this bound, one
# SERVICE of millions of empty elements, or as much junk between SERVICEs, took gigabytes.
MAX_BYTES_BETWEEN_RECORDS = 2 * 1024 * 1024


class _Watched:
    """The file as the parser reads it, refusing to read on MAX_BYTES_BETWEEN_RECORDS past ``mark``."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream, self.read_bytes, self.mark = stream, 0, 0

    def read(self, size: int = -1) -> bytes:
        if self.read_bytes - self.mark > MAX_BYTES_BETWEEN_RECORDS:
            raise UnreadableFile(f"more than {MAX_BYTES_BETWEEN_RECORDS // 1024 ** 2} MiB without a SERVICE"
                                 f" beginning or ending (around byte {self.read_bytes:,}); a record is a few KiB")
        data = self._stream.read(size)
        self.read_bytes += len(data)
        return data


def read(stream: IO[bytes]) -> Iterator[Record | str]:
    """The records of an open-Qcat file in file order; first the catalogue mode
    (``NEW_CATALOG`` or ``UPDATE_CATALOG``) as a plain string."""
    watched = _Watched(stream)
    parser = etree.iterparse(
        watched, events=("start", "end"), resolve_entities=False, load_dtd=False, no_network=True,
        dtd_validation=False, huge_tree=False, remove_comments=True, remove_pis=True,
        # events only for the elements acted on here (the rest is still parsed into each SERVICE's
        # tree): a SERVICE has some forty elements, each two events' work in Python otherwise
        tag=("OPENQCAT", *SECTIONS, "UPDATE_CATALOG", "SERVICE"),
    )
    section, counts, mode = None, {"new": 0, "delete": 0}, None
    try:
        for event, element in parser:
            watched.mark = watched.read_bytes
            tag = element.tag if isinstance(element.tag, str) else ""
            if event == "start":
                if mode is None and tag == "OPENQCAT":
                    if element.getroottree().docinfo.internalDTD is not None:
                        raise UnreadableFile("a document type declaration (DTD) is not allowed in open-Qcat imports")
                elif tag in ("NEW_CATALOG", "UPDATE_CATALOG"):
                    if mode is not None:
                        raise UnreadableFile("a file holds one NEW_CATALOG or one UPDATE_CATALOG")
                    mode = tag
                    yield mode
                if tag in SECTIONS:
                    section = SECTIONS[tag]
                continue
            if tag == "SERVICE" and section is not None and mode is not None:
                counts[section] += 1
                where = f"line {element.sourceline}, {section.upper()} SERVICE #{counts[section]}"
                yield read_service(element, section, where)
                element.clear(keep_tail=False)
                parent = element.getparent()
                while parent is not None and element.getprevious() is not None:
                    del parent[0]
            elif tag in SECTIONS:
                section = None
            elif tag == "OPENQCAT" and mode is None:
                raise UnreadableFile("neither NEW_CATALOG nor UPDATE_CATALOG in the file")
    except etree.XMLSyntaxError as exc:
        raise UnreadableFile(f"not well-formed XML: {exc}") from None
    if mode is None:
        raise UnreadableFile("not an open-Qcat file (no OPENQCAT root with NEW_CATALOG or UPDATE_CATALOG)")
