"""Importing a provider's catalogue (open-Qcat, the national course search's JSON): records are
streamed into a temporary staging table and applied in keyset batches (each batch's inserts,
updates and events in a few statements), so memory stays flat whatever the file's size. Each offer
is validated like an API write; an offer whose content is unchanged is left alone (no write, no
event), so re-importing a file changes nothing.

Reading and applying go on at once: an offer is applied once ``WINDOW`` records after it are
staged, by when its dated instances (which follow their offer in the files seen) are in. Whether
that held is checked when the file is read: if an instance came later than that, or a PRODUCT_ID
twice, everything is undone to a savepoint and the file is read again and applied only once it is
read whole (the result is the same, only slower). UPDATE_CATALOG is always applied that way, since
its DELETE part needs the whole file first. UPDATE_CATALOG and the national search's pages are
deliveries of changes: an offer keeps the dated sessions they do not name (``DELTA_MODES``)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from contracts import OFFERS_TOPIC
from runtime import places
from runtime.events import Event
from runtime.ids import new_id
from runtime.models import single_line
from runtime.outbox import Outgoing, add_many_to_outbox, outgoing
from services.catalog import handlers, store
from services.catalog.domain import Acting, OfferIn, RuleBroken, check_funding, offer_event_type_for
from services.catalog.openqcat import Record

BATCH = 500  # offers validated and written together
READ_BATCH = 1500  # records parsed and staged together
WINDOW = 2000  # records staged after an offer before it is applied while the file is still read
LISTED = 1000  # ids listed per category in the report; the counts are always complete

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class ImportReport:
    mode: str
    offers_in_file: int = 0
    sessions_in_file: int = 0
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("created", "updated", "unchanged", "deleted", "rejected"), 0))
    rejected: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def count(self, what: str, product_id: str) -> None:
        self.counts[what] += 1
        listed = getattr(self, what, None)
        if isinstance(listed, list) and len(listed) < LISTED:
            listed.append(product_id)

    def warn(self, product_id: str, where: str, warning: str) -> None:
        if len(self.warnings) < 10 * LISTED:  # bounded as the rejections: a report never grows with the file
            self.warnings.append({"product_id": product_id, "where": where, "warning": warning})

    def reject(self, product_id: str, where: str, reason: str) -> None:
        self.counts["rejected"] += 1
        if len(self.rejected) < 10 * LISTED:
            self.rejected.append({"product_id": product_id, "where": where, "reason": reason})

    def merge(self, other: ImportReport) -> None:
        """Take over what applying did, after what reading found (its refusals listed first)."""
        for what in ("created", "updated", "unchanged", "deleted", "rejected"):
            self.counts[what] += other.counts[what]
        self.created, self.updated, self.deleted = other.created, other.updated, other.deleted
        self.rejected += other.rejected[:max(0, 10 * LISTED - len(self.rejected))]
        self.warnings += other.warnings[:max(0, 10 * LISTED - len(self.warnings))]

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "offers_in_file": self.offers_in_file, "sessions_in_file": self.sessions_in_file,
                "counts": self.counts, "created": self.created, "updated": self.updated, "deleted": self.deleted,
                "rejected": self.rejected, "warnings": self.warnings,
                "changed": bool(self.counts["created"] or self.counts["updated"] or self.counts["deleted"])}


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts)


def _unfit_id(name: str, value: str | None) -> str | None:
    """Why a record's id cannot be an offer's or a session's (external_id: one line of at most 200)."""
    if value is None:
        return None
    if len(value) > 200:
        return f"{name} is longer than 200 characters"
    try:
        single_line(value)
    except ValueError as exc:
        return f"{name}: {exc}"
    return None


class _Staging:
    """The file's records in a temporary table. The next part of the file is parsed (in a thread:
    CPU work off the event loop) while the part before is staged and its offers applied. One thread
    of its own for the whole reading, its end included: lxml's parser is not to be used from several
    threads, and the loop's pool hands each step to whichever thread is free (a test process once
    aborted while collecting garbage in an import test; not reproduced since, but this is one cause
    it can have)."""

    def __init__(self, conn: asyncpg.Connection, records: Iterator[Record | str], report: ImportReport,
                 progress: Progress | None) -> None:
        self.conn, self.records, self.report, self.progress = conn, records, report, progress
        self.seq, self.done = 0, False
        self.offers: deque[int] | None = None  # while applying as it reads: offers staged, not yet applied
        self._parsing: asyncio.Future | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-reading")

    async def create(self, *, applied_while_read: bool) -> None:
        await self.conn.execute(  # data as text: COPY has no binary jsonb here
            "CREATE TEMP TABLE import_staging (seq int PRIMARY KEY, kind text NOT NULL, product_id text NOT NULL,"
            " course_id text, place text NOT NULL, data text) ON COMMIT DROP")
        if applied_while_read:  # its offers are read while it fills: indexed from the start
            self.offers = deque()
            await self.index()

    async def index(self) -> None:
        await self.conn.execute("CREATE INDEX ON import_staging (course_id) WHERE kind = 'instance'")
        # the rejected records too: NEW_CATALOG looks up each of the provider's offers in both (with
        # two indexes, or one for the offers alone, that look-up took 8 of an import's 20 s)
        await self.conn.execute("CREATE INDEX ON import_staging (product_id) WHERE kind IN ('offer', 'rejected')")
        await self.conn.execute("CREATE INDEX ON import_staging (product_id) WHERE kind = 'instance'")
        await self.conn.execute("ANALYZE import_staging")

    def _parse(self) -> list[tuple[Record | str, str | None]]:
        """The file's next records, each with its data as JSON: encoded here on the reading thread,
        while the loop's statements run, not on the loop between them."""
        return [(r, None if isinstance(r, str) or r.error else orjson.dumps(r.data).decode())
                for _, r in zip(range(READ_BATCH), self.records, strict=False)]

    def _in_thread(self, work: Callable[[], Any]) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def read_more(self) -> None:
        """Stage the next part of the file and start parsing the one after."""
        batch = await (self._parsing or self._in_thread(self._parse))
        self.done = len(batch) < READ_BATCH
        self._parsing = None if self.done else self._in_thread(self._parse)
        rows = []
        for record, data in batch:
            if isinstance(record, str):
                self.report.mode = record
                continue
            unfit = _unfit_id("PRODUCT_ID", record.product_id) or _unfit_id("COURSE_ID", record.course_id)
            if unfit:  # an id no offer can have (too long for its index, a NUL): refused before staging
                self.report.reject(record.product_id[:200], record.where, unfit)
                continue
            if record.error:
                self.report.reject(record.product_id, record.where, record.error)
                # staged all the same, without its data: NEW_CATALOG must not take a record the file
                # still lists, only with an error, for one it no longer lists (and withdraw the offer)
                self.seq += 1
                rows.append((self.seq, "rejected", record.product_id or "", None, record.where, None))
                continue
            self.seq += 1
            self.report.offers_in_file += record.kind == "offer"
            if self.offers is not None and record.kind == "offer":
                self.offers.append(self.seq)
            self.report.sessions_in_file += record.kind == "instance"
            rows.append((self.seq, record.kind, record.product_id, record.course_id, record.where, data))
        if rows:
            await self.conn.copy_records_to_table("import_staging", records=rows)
        if self.progress:
            self.progress("read", self.seq, 0)

    async def close(self) -> None:
        """Wait for a parse still running (an import that failed), then end the reading on its own
        thread (a file left part read: its parser is freed there). The stream is closed after this."""
        if self._parsing is not None:
            await asyncio.gather(self._parsing, return_exceptions=True)
            self._parsing = None
        if hasattr(self.records, "close"):
            await self._in_thread(self.records.close)
        self._thread.shutdown(wait=False)


# A dated instance (``i``) whose PRODUCT_ID the file holds more than once: no offer takes any copy.
_REPEATED_INSTANCE = ("EXISTS (SELECT 1 FROM import_staging d WHERE d.kind = 'instance'"
                      " AND d.product_id = i.product_id AND d.seq <> i.seq)")


DELTA_MODES = ("UPDATE_CATALOG", "WBSUCHE")  # deliveries of changes: an offer keeps what they do not say
# what an offer's record holds of it, as the file gives it (OfferIn's fields but those of the import)
_KNOWN_FIELDS = ("external_id", "title", "description", "skills", "esco_skills", "occupation_codes", "qualification",
                 "format", "schedule", "hours", "price_eur", "funding", "measure_number", "url", "language")


async def _known_courses(conn: asyncpg.Connection, staging: _Staging, provider_id: uuid.UUID) -> None:
    """A delivery of changes may bring dated sessions of a course an earlier delivery brought
    ("Termine angelegt oder aktualisiert"): the provider's offer of that id is staged as a record
    of its own, as it stands (status and visibility too), so that the sessions are added to it."""
    named = [r["course_id"] for r in await conn.fetch(
        "SELECT DISTINCT i.course_id FROM import_staging i WHERE i.kind = 'instance' AND NOT EXISTS"
        " (SELECT 1 FROM import_staging o WHERE o.kind IN ('offer', 'rejected') AND o.product_id = i.course_id)")]
    if not named:
        return
    ids = [r["id"] for r in await conn.fetch(
        "SELECT id FROM offers WHERE provider_id = $1 AND external_id = ANY($2::text[]) AND status <> 'withdrawn'"
        " ORDER BY external_id", provider_id, named)]
    rows = []
    for offer in map(store.offer_state, await store.get_offers(conn, ids)):
        staging.seq += 1
        data = {k: offer[k] for k in _KNOWN_FIELDS} | {
            "_known": {"status": offer["status"], "visibility": offer["own_visibility"]}}
        rows.append((staging.seq, "offer", offer["external_id"], None, "(an offer of an earlier delivery)",
                     orjson.dumps(data).decode()))
    if rows:
        await conn.copy_records_to_table("import_staging", records=rows)


async def _orphans(conn: asyncpg.Connection, report: ImportReport) -> None:
    """Dated instances no offer takes: one naming no offer of the file, and every copy of one whose
    PRODUCT_ID the file holds twice (it would have given its date twice, or to two courses)."""
    for row in await conn.fetch(
            f"SELECT i.product_id, i.place FROM import_staging i WHERE i.kind = 'instance' AND {_REPEATED_INSTANCE}"
            " ORDER BY i.seq"):
        report.reject(row["product_id"], row["place"], "PRODUCT_ID appears more than once in the file")
    rows = await conn.fetch(
        "SELECT i.product_id, i.course_id, i.place, EXISTS (SELECT 1 FROM import_staging r WHERE r.kind = 'rejected'"
        "  AND r.product_id = i.course_id) AS course_rejected"
        " FROM import_staging i WHERE i.kind = 'instance' AND NOT EXISTS"
        " (SELECT 1 FROM import_staging o WHERE o.kind = 'offer' AND o.product_id = i.course_id) ORDER BY i.seq")
    for row in rows:
        report.reject(row["product_id"], row["place"],
                      f"its course {row['course_id']} was rejected (see there)" if row["course_rejected"] else
                      f"COURSE_ID {row['course_id']} names no offer (EDUCATION type=\"true\") in this file")


async def _delete_section(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID,
                          report: ImportReport) -> None:
    """UPDATE_CATALOG's DELETE: offers named there are withdrawn, dated instances removed from their
    offer; an id the NEW part delivers again is simply replaced by it."""
    rows = await conn.fetch(
        "SELECT d.product_id, d.place FROM import_staging d WHERE d.kind = 'delete' AND NOT EXISTS"
        " (SELECT 1 FROM import_staging n WHERE n.kind IN ('offer', 'instance') AND n.product_id = d.product_id)"
        " ORDER BY d.seq")
    for row in rows:
        offer_id = await conn.fetchval(
            "SELECT id FROM offers WHERE provider_id = $1 AND external_id = $2 AND status <> 'withdrawn'",
            provider_id, row["product_id"])
        if offer_id is not None:
            await handlers.withdraw_offers(conn, acting.tenant, [offer_id])
            report.count("deleted", row["product_id"])
            continue
        owner = await conn.fetchrow(
            "SELECT s.offer_id, o.status, (SELECT count(*) FROM offer_sessions a WHERE a.offer_id = o.id) AS dates,"
            # the dates NEW gives the course (a date moved: DELETE the old, NEW the new)
            " (SELECT count(*) FROM import_staging n WHERE n.kind = 'instance' AND n.course_id = o.external_id)"
            "  AS coming FROM offer_sessions s JOIN offers o ON o.id = s.offer_id"
            " WHERE o.provider_id = $1 AND s.external_id = $2 AND o.status <> 'withdrawn'", provider_id,
            row["product_id"])
        if owner is not None:
            if owner["dates"] == 1 and not owner["coming"]:  # an offer has at least one date
                report.reject(row["product_id"], row["place"],
                              "the course's only date is not removed: DELETE the course itself")
                continue
            await conn.execute("DELETE FROM offer_sessions WHERE offer_id = $1 AND external_id = $2",
                               owner["offer_id"], row["product_id"])
            await conn.execute("UPDATE offers SET version = version + 1, updated_at = now(), import_hash = NULL"
                               " WHERE id = $1", owner["offer_id"])
            # a draft that stays a draft announces nothing (offer_event_type_for)
            await handlers.announce_offer(conn, acting.tenant, owner["offer_id"], owner["status"])
            report.count("deleted", row["product_id"])


def _offer_body(row: asyncpg.Record, provider_id: uuid.UUID, status: str, visibility: dict,
                existing: dict | None = None) -> OfferIn:
    """The offer a staged record gives. ``existing``: in a delivery of changes (UPDATE_CATALOG, the
    national search's pages), the offer as it stands; the file's dated sessions are added to its
    sessions, each replacing the one of its id, and an offer the file sends without any keeps its
    own (its dated sessions leave by UPDATE_CATALOG's DELETE). Fields the record took from one of
    its dated sessions (``_per_session``: the national search gives format and Maßnahmenummer per
    termin, and a page's first termin of a course differs from page to page) keep their value."""
    data = orjson.loads(row["data"])
    own = data.pop("_own_session", None)
    per_session = data.pop("_per_session", ())
    for name in per_session if existing else ():
        data[name] = existing[name]
    kept = existing["sessions"] if existing else None
    known = data.pop("_known", None)  # an offer of an earlier delivery, named by dated sessions of this one
    if known:
        status, visibility = known["status"], known["visibility"]
    sessions = [{k: v for k, v in orjson.loads(s).items() if not k.startswith("_")} for s in row["instances"]]
    own = {k: v for k, v in own.items() if not k.startswith("_")} if own else None
    if kept is not None:
        if sessions:  # dated sessions now: the course's own date of before (its id is the course's) goes
            kept = [k for k in kept if k.get("external_id") != row["product_id"]]
        merged = {session.get("external_id") or f"#{n}": session for n, session in enumerate(kept)}
        # its own date (SERVICE_DATE) where it has no others, or in place of the one it gave before
        given = sessions or ([own] if own and (not kept or own.get("external_id") in merged) else [])
        for n, session in enumerate(given):
            merged[session.get("external_id") or f"+{n}"] = session
        sessions = list(merged.values())
    elif not sessions and own:
        sessions = [own]
    if not sessions:
        raise RuleBroken("sessions", "no date: neither the offer's SERVICE_DATE nor a dated instance")
    # in date order, whatever the file's: an export listing the same dates in another order changes nothing
    sessions.sort(key=lambda s: (s.get("start") or "", s.get("end") or "", s.get("external_id") or ""))
    for index, session in enumerate(sessions):
        _postcode_of_town(index, session.get("location"))
    return OfferIn.model_validate(data | {"provider_id": provider_id, "sessions": sessions, "status": status,
                                          "visibility": visibility})


def _postcode_of_town(index: int, place: dict | None) -> None:
    """A place given without its postcode (its town alone, or coordinates) gets the postcode of its
    centre; every session's place has one (Location)."""
    if not isinstance(place, dict) or place.get("zip"):
        return
    lat, lon = place.get("lat"), place.get("lon")
    if lat is None or lon is None:
        town = places.gazetteer().town(place.get("city"))
        if town is None:
            raise RuleBroken(f"sessions.{index}.location",
                             f"the place has no postcode, and its town {place.get('city')!r} was not found")
        lat, lon = place["lat"], place["lon"] = town.lat, town.lon
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        place["zip"] = places.gazetteer().postcode_near(lat, lon)


@dataclass(frozen=True)
class _Seen:
    status: str
    version: int
    product_id: str
    place: str


@dataclass
class _Batch:
    """One batch of offers, validated and sorted into what to write."""
    creates: list[tuple[uuid.UUID, OfferIn, str]] = field(default_factory=list)
    rows: store.OfferRows | None = None  # the new offers' rows, encoded with them
    created: list[Outgoing] = field(default_factory=list)  # the new offers' events, built with them
    updates: list[tuple[uuid.UUID, OfferIn, str]] = field(default_factory=list)
    seen: dict[uuid.UUID, _Seen] = field(default_factory=dict)  # each updated offer as the batch read it
    last: int = 0  # the staging sequence it ends at
    size: int = 0


_STAGED_OFFERS = (
    # copies over the whole file, by index (a window over the rest of the file made each
    # batch sort everything after it: 100,000 offers imported at 82/s)
    "SELECT s.seq, s.product_id, s.place, s.data, (SELECT count(*) FROM import_staging c"
    "  WHERE c.kind = 'offer' AND c.product_id = s.product_id) AS copies,"
    # the instances' JSON as the staging holds it, parsed here: as jsonb, PostgreSQL parsed and
    # printed it again, on the core its inserts need
    " coalesce((SELECT array_agg(i.data ORDER BY i.seq) FROM import_staging i"
    f"  WHERE i.kind = 'instance' AND i.course_id = s.product_id AND NOT {_REPEATED_INSTANCE}), '{{}}') AS instances"
    " FROM import_staging s WHERE s.kind = 'offer' AND s.seq > $1 AND s.seq <= $2 ORDER BY s.seq LIMIT $3")


async def _read_batch(conn: asyncpg.Connection, provider_id: uuid.UUID, after: int, upto: int, delta: bool
                      ) -> tuple[list[asyncpg.Record], dict[str, asyncpg.Record], dict[str, dict]]:
    """The batch's staged offers, the provider's offers of the same ids, and (``delta``: a delivery
    of changes) those offers as they stand, by id."""
    rows = await conn.fetch(_STAGED_OFFERS, after, upto, BATCH)
    existing = {r["external_id"]: r for r in await conn.fetch(
        "SELECT id, external_id, import_hash, status, withdrawn_by_import, version FROM offers WHERE provider_id = $1"
        " AND external_id = ANY($2::text[])", provider_id, [r["product_id"] for r in rows])} if rows else {}
    states: dict[str, dict] = {}
    if delta and existing:
        for offer in await store.get_offers(conn, [r["id"] for r in existing.values() if r["status"] != "withdrawn"]):
            states[offer["external_id"]] = store.offer_state(offer)
    return rows, existing, states


@dataclass(frozen=True)
class _Writing:
    """What every offer of one import is written with."""
    acting: Acting
    provider: asyncpg.Record
    status: str
    visibility: dict
    at: datetime  # the transaction's time: every row's updated_at
    network_shares: list[str] | None


async def _prepare(rows: list[asyncpg.Record], existing: dict[str, asyncpg.Record], writing: _Writing,
                   report: ImportReport, kept: dict[str, dict] | None = None) -> _Batch:
    """Validate a batch's offers and sort them into new, changed and unchanged; the new ones' rows
    and events are built here too, so that the batch's statements follow each other without Python
    work between them (which left PostgreSQL waiting a fifth of an import). Yields to the event loop
    every few offers, so the previous batch's writes (a task on the same loop) go on meanwhile."""
    batch, today, provider, status = _Batch(size=len(rows)), datetime.now(UTC).date(), writing.provider, writing.status
    records = []  # the new offers' rows
    for n, row in enumerate(rows):
        # the writes' task sends its next statement only when this yields: first at once, then every
        # few offers (every 25, PostgreSQL waited up to 5 ms before each of a batch's statements)
        if n % 5 == 0:
            await asyncio.sleep(0)
        batch.last, product_id = row["seq"], row["product_id"]
        if row["copies"] > 1:
            report.reject(product_id, row["place"], "PRODUCT_ID appears more than once in the file")
            continue
        try:
            body = _offer_body(row, provider["id"], status, writing.visibility,
                               kept.get(product_id) if kept is not None else None)
            if body.funding.qcg:
                try:
                    check_funding(body, provider["azav"], today)
                except RuleBroken as exc:
                    body.funding.qcg = False
                    report.warn(product_id, row["place"], f"qcg not taken over: {exc.rule}")
            handlers.locate_sessions(body)
        except ValidationError as exc:
            report.reject(product_id, row["place"], _reason(exc))
            continue
        except RuleBroken as exc:
            report.reject(product_id, row["place"], f"{exc.field}: {exc.rule}")
            continue
        digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        current = existing.get(product_id)
        if current is None:
            offer_id = new_id()
            records.append(store.offer_record(writing.acting.tenant, offer_id, body, digest))
            batch.creates.append((offer_id, body, digest))
            _announce(batch.created, writing, records[-1], body, 1, None)
            report.count("created", product_id)
        elif current["status"] == "withdrawn" and not current["withdrawn_by_import"]:
            # withdrawn by a person (the API, the portal), it stays withdrawn, as the API keeps it; one
            # an earlier file no longer listed comes back with the file that lists it again
            report.reject(product_id, row["place"], "this offer was withdrawn in Bildungsraum and is not published"
                                                    " again; give the course a new PRODUCT_ID to offer it anew")
        elif current["import_hash"] == digest and current["status"] == body.status:
            report.counts["unchanged"] += 1
        else:
            batch.updates.append((current["id"], body, digest))  # counted once written (_write)
            batch.seen[current["id"]] = _Seen(current["status"], current["version"], product_id, row["place"])
    if batch.creates:
        batch.rows = store.offer_rows(writing.acting.tenant, records, batch.creates)
    return batch


def _announce(events: list[Outgoing], writing: _Writing, record: dict, body: OfferIn, version: int,
              previous: str | None) -> None:
    state = store.written_state(record, body, version, writing.at, writing.network_shares)
    event_type = offer_event_type_for(previous, state["status"])
    if event_type:
        events.append(outgoing(Event(event_type, handlers.SOURCE, writing.acting.tenant, state["id"], state)))


async def _write(conn: asyncpg.Connection, writing: _Writing, batch: _Batch, report: ImportReport) -> None:
    """The batch's writes and events together: a few statements, not a few per offer. An offer
    someone wrote since its batch was read (withdrawn through the API, say) is left as they wrote it
    and reported: the import decided on what it read, and must not undo a write it never saw."""
    events = batch.created
    if batch.rows:
        await store.insert_offer_rows(conn, batch.rows)
    if batch.updates:
        # locked first, so each event's version is the one written
        versions = dict(await conn.fetch("SELECT id, version FROM offers WHERE id = ANY($1::uuid[])"
                                         " ORDER BY id FOR UPDATE", [u[0] for u in batch.updates]))
        unchanged_since = []
        for update in batch.updates:
            seen = batch.seen[update[0]]
            if versions[update[0]] == seen.version:
                unchanged_since.append(update)
                report.count("updated", seen.product_id)
            else:
                report.reject(seen.product_id, seen.place, "changed by someone else while the import ran; not"
                                                           " overwritten (import again to apply the file's version)")
        batch.updates = unchanged_since
    if batch.updates:
        await store.update_offers(conn, writing.acting.tenant, batch.updates)
        events = list(events)
        for offer_id, body, _ in batch.updates:
            _announce(events, writing, store.offer_record(writing.acting.tenant, offer_id, body, None), body,
                      versions[offer_id] + 1, batch.seen[offer_id].status)
    if events:
        await add_many_to_outbox(conn, OFFERS_TOPIC, events)


class _Applier:
    """Applies the staged offers in file order, batch by batch: a validated batch is written while
    the next one is validated, so Python and PostgreSQL each do their part at once."""

    def __init__(self, conn: asyncpg.Connection, writing: _Writing, report: ImportReport,
                 progress: Progress | None) -> None:
        self.conn, self.writing, self.report, self.progress = conn, writing, report, progress
        self.read_to = 0  # the staging sequence through which offers are validated
        self.written = 0
        self.total = 0  # the offers in the file, once it is read
        self.delta = False  # a delivery of changes (UPDATE_CATALOG, the national search's pages)
        self._pending: _Batch | None = None

    async def apply_through(self, upto: int, staged_offers: deque[int] | None = None) -> None:
        """Validate (and write, but for the last batch) the staged offers up to this sequence; with
        ``staged_offers`` (the sequences of offers staged and not yet applied), whole batches only,
        so that each batch's validating has a batch's writing to go on beside."""
        while True:
            end = upto
            if staged_offers is not None:
                if len(staged_offers) < BATCH or staged_offers[BATCH - 1] > upto:
                    return
                end = staged_offers[BATCH - 1]
                for _ in range(BATCH):
                    staged_offers.popleft()
            # One statement at a time on the connection: the next batch is read before the writes start.
            rows, existing, kept = await _read_batch(self.conn, self.writing.provider["id"], self.read_to, end,
                                                     self.delta)
            self.read_to = rows[-1]["seq"] if len(rows) == BATCH else max(end, self.read_to)
            previous, self._pending = self._pending, None
            writing = asyncio.ensure_future(self._write(previous))
            try:
                self._pending = (await _prepare(rows, existing, self.writing, self.report, kept if self.delta else None)
                                 if rows else None)
            finally:
                await writing  # (also when validating failed: the connection is free before the caller rolls back)
            if staged_offers is None and len(rows) < BATCH:
                return

    async def finish(self) -> None:
        previous, self._pending = self._pending, None
        await self._write(previous)

    async def _write(self, batch: _Batch | None) -> None:
        if batch is None:
            return
        await _write(self.conn, self.writing, batch, self.report)
        self.written += batch.size
        if self.progress:
            self.progress("apply", self.written, self.total)


async def _replace_rest(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID,
                        report: ImportReport) -> None:
    """NEW_CATALOG is the provider's whole catalogue: what it no longer lists is withdrawn, a batch
    at a time (one by one, a catalogue shrunk by 80,000 offers took 168 s)."""
    rows = await conn.fetch(
        "SELECT o.id, coalesce(o.external_id, o.id::text) AS product_id FROM offers o"
        " WHERE o.provider_id = $1 AND o.status <> 'withdrawn' AND NOT EXISTS"
        " (SELECT 1 FROM import_staging s WHERE s.kind IN ('offer', 'rejected') AND s.product_id = o.external_id)"
        " ORDER BY o.id FOR UPDATE OF o", provider_id)
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        await handlers.withdraw_offers(conn, acting.tenant, [row["id"] for row in batch])
        for row in batch:
            report.count("deleted", row["product_id"])


class _ReadAgain(Exception):
    """The file's order did not allow applying offers while it was read."""


async def _out_of_order(conn: asyncpg.Connection, applied_while_reading: int, window: int) -> bool:
    """Whether an offer applied while the file was read missed a dated instance that came later, or
    an offer's or a dated instance's PRODUCT_ID came twice (every copy is refused, which needs the
    whole file)."""
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM import_staging WHERE kind IN ('offer', 'instance')"
        "  GROUP BY kind, product_id HAVING count(*) > 1)"
        " OR EXISTS (SELECT 1 FROM import_staging i JOIN import_staging o ON o.kind = 'offer'"
        "  AND o.product_id = i.course_id WHERE i.kind = 'instance' AND o.seq <= $1 AND i.seq > o.seq + $2)",
        applied_while_reading, window)


async def _import(conn: asyncpg.Connection, writing: _Writing, records: Iterator[Record | str],
                  progress: Progress | None, window: int | None) -> dict[str, Any]:
    """One reading of the file: applied while read (``window``), or once it is read whole (None)."""
    report = ImportReport(mode="")   # what reading the file found
    applied = ImportReport(mode="")  # what applying it did
    staging = _Staging(conn, records, report, progress)
    applier = _Applier(conn, writing, applied, progress)
    acting, provider = writing.acting, writing.provider
    applied_while_reading = 0
    try:
        await staging.create(applied_while_read=window is not None)
        while not staging.done:
            await staging.read_more()
            applier.delta = report.mode in DELTA_MODES
            if window is None:
                continue
            if report.mode == "UPDATE_CATALOG":
                raise _ReadAgain
            if not staging.done:
                await applier.apply_through(staging.seq - window, staging.offers)
                applied_while_reading = applier.read_to
    finally:
        await staging.close()
    applier.total = report.offers_in_file
    if window is None:
        await staging.index()
    if applier.delta:
        await _known_courses(conn, staging, provider["id"])
    await _orphans(conn, report)
    if report.mode == "UPDATE_CATALOG":
        await _delete_section(conn, acting, provider["id"], applied)
    await applier.apply_through(staging.seq)
    await applier.finish()
    if window is not None and await _out_of_order(conn, applied_while_reading, window):
        raise _ReadAgain
    if report.mode == "NEW_CATALOG":
        await _replace_rest(conn, acting, provider["id"], applied)
    await conn.execute("DROP TABLE import_staging")  # (not kept to commit: a caller may import again first)
    report.merge(applied)
    return report.as_dict()


async def import_catalogue(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID,
                           records: Callable[[], Iterator[Record | str]], *, status: str = "published",
                           visibility: dict | None = None, progress: Progress | None = None,
                           window: int | None = WINDOW) -> dict[str, Any]:
    """Apply a delivery for one provider the actor acts for, in the caller's transaction. ``records``
    gives the file's records from its start, as often as it is called (twice when the file's order
    does not allow applying it while it is read)."""
    # Whose provider it is, first: one who may not import for it must not wait behind its import.
    await handlers.own_provider(conn, acting, provider_id)
    # One import of a provider at a time (a client retrying after a timeout): the second waits, then
    # finds the first's offers. Before, both inserted them and the second failed on the unique key.
    await conn.execute(store.IMPORT_LOCK.format("pg_advisory_xact_lock"), str(provider_id))
    shares = await store.hold_sharing(conn, acting.tenant)  # what every event of the import says
    writing = _Writing(acting, await handlers.own_provider(conn, acting, provider_id), status,
                       visibility or {"scope": "home", "networks": []}, await conn.fetchval("SELECT now()"),
                       shares or None)
    if window is not None:
        try:
            async with conn.transaction():  # a savepoint
                return await _import(conn, writing, records(), progress, window)
        except _ReadAgain:
            pass
    return await _import(conn, writing, records(), progress, None)
