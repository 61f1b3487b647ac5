"""Importing a provider's catalogue (open-Qcat, the national course search's JSON): records are
streamed into a temporary staging table, then applied in keyset batches (each batch's inserts,
updates and events in a few pipelined statements), so memory stays flat whatever the file's size.
Each offer is validated like an API write; an offer whose content is unchanged is left alone (no
write, no event), so re-importing a file changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from runtime.ids import new_id
from services.catalog import handlers, store
from services.catalog.domain import Acting, OfferIn, RuleBroken, check_funding
from services.catalog.openqcat import Record

BATCH = 500
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

    def reject(self, product_id: str, where: str, reason: str) -> None:
        self.counts["rejected"] += 1
        if len(self.rejected) < 10 * LISTED:
            self.rejected.append({"product_id": product_id, "where": where, "reason": reason})

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


async def _stage(conn: asyncpg.Connection, records: Iterator[Record | str], report: ImportReport,
                 progress: Progress | None) -> None:
    await conn.execute(
        "CREATE TEMP TABLE import_staging (seq int PRIMARY KEY, kind text NOT NULL, product_id text NOT NULL,"
        " course_id text, place text NOT NULL, data text) ON COMMIT DROP")  # text: COPY has no binary jsonb here
    seq, done = 0, False

    def next_batch() -> list[Record | str]:
        return [r for _, r in zip(range(BATCH), records, strict=False)]

    while not done:
        # Parsing is CPU work: off the event loop, so the service keeps answering others meanwhile.
        batch = await asyncio.to_thread(next_batch)
        done = len(batch) < BATCH
        rows = []
        for record in batch:
            if isinstance(record, str):
                report.mode = record
                continue
            if record.error:
                report.reject(record.product_id, record.where, record.error)
                continue
            seq += 1
            report.offers_in_file += record.kind == "offer"
            report.sessions_in_file += record.kind == "instance"
            rows.append((seq, record.kind, record.product_id, record.course_id, record.where,
                         orjson.dumps(record.data).decode()))
        if rows:
            await conn.copy_records_to_table("import_staging", records=rows)
        if progress:
            progress("read", seq, 0)
    await conn.execute("CREATE INDEX ON import_staging (course_id) WHERE kind = 'instance'")
    await conn.execute("CREATE INDEX ON import_staging (product_id) WHERE kind = 'offer'")
    await conn.execute("ANALYZE import_staging")


async def _orphans(conn: asyncpg.Connection, report: ImportReport) -> None:
    rows = await conn.fetch(
        "SELECT i.product_id, i.course_id, i.place FROM import_staging i WHERE i.kind = 'instance' AND NOT EXISTS"
        " (SELECT 1 FROM import_staging o WHERE o.kind = 'offer' AND o.product_id = i.course_id) ORDER BY i.seq")
    for row in rows:
        report.reject(row["product_id"], row["place"],
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
            await handlers.withdraw_offer(conn, acting, offer_id)
            report.count("deleted", row["product_id"])
            continue
        owner = await conn.fetchval(
            "SELECT s.offer_id FROM offer_sessions s JOIN offers o ON o.id = s.offer_id"
            " WHERE o.provider_id = $1 AND s.external_id = $2 AND o.status <> 'withdrawn'", provider_id,
            row["product_id"])
        if owner is not None:
            await conn.execute("DELETE FROM offer_sessions WHERE offer_id = $1 AND external_id = $2",
                               owner, row["product_id"])
            await conn.execute("UPDATE offers SET version = version + 1, updated_at = now(), import_hash = NULL"
                               " WHERE id = $1", owner)
            await handlers.announce_offer(conn, acting.tenant, owner, "published")
            report.count("deleted", row["product_id"])


def _offer_body(row: asyncpg.Record, provider_id: uuid.UUID, status: str, visibility: dict) -> OfferIn:
    data = orjson.loads(row["data"])
    own = data.pop("_own_session", None)
    sessions = [{k: v for k, v in s.items() if not k.startswith("_")} for s in row["instances"]]
    if not sessions and own:
        sessions = [{k: v for k, v in own.items() if not k.startswith("_")}]
    if not sessions:
        raise RuleBroken("sessions", "no date: neither the offer's SERVICE_DATE nor a dated instance")
    return OfferIn.model_validate(data | {"provider_id": provider_id, "sessions": sessions, "status": status,
                                          "visibility": visibility})


@dataclass
class _Batch:
    """One batch of offers, validated and sorted into what to write."""
    creates: list[tuple[uuid.UUID, OfferIn, str]] = field(default_factory=list)
    updates: list[tuple[uuid.UUID, OfferIn, str]] = field(default_factory=list)
    previous: dict[uuid.UUID, str] = field(default_factory=dict)  # the updated offers' status before
    last: int = 0  # the staging sequence it ends at
    size: int = 0


_STAGED_OFFERS = (
    # copies over the whole file, by index (a window over the rest of the file made each
    # batch sort everything after it: 100,000 offers imported at 82/s)
    "SELECT s.seq, s.product_id, s.place, s.data, (SELECT count(*) FROM import_staging c"
    "  WHERE c.kind = 'offer' AND c.product_id = s.product_id) AS copies,"
    " coalesce((SELECT jsonb_agg(i.data::jsonb ORDER BY i.seq) FROM import_staging i"
    "  WHERE i.kind = 'instance' AND i.course_id = s.product_id), '[]') AS instances"
    " FROM import_staging s WHERE s.kind = 'offer' AND s.seq > $1 ORDER BY s.seq LIMIT $2")


async def _read_batch(conn: asyncpg.Connection, provider_id: uuid.UUID, after: int
                      ) -> tuple[list[asyncpg.Record], dict[str, asyncpg.Record]]:
    rows = await conn.fetch(_STAGED_OFFERS, after, BATCH)
    existing = {r["external_id"]: r for r in await conn.fetch(
        "SELECT id, external_id, import_hash, status FROM offers WHERE provider_id = $1"
        " AND external_id = ANY($2::text[])", provider_id, [r["product_id"] for r in rows])} if rows else {}
    return rows, existing


async def _prepare(rows: list[asyncpg.Record], existing: dict[str, asyncpg.Record], provider: asyncpg.Record,
                   status: str, visibility: dict, report: ImportReport) -> _Batch:
    """Validate a batch's offers and sort them into new, changed and unchanged. Yields to the event
    loop every few offers, so the previous batch's writes (a task on the same loop) go on meanwhile."""
    batch, today = _Batch(size=len(rows)), datetime.now(UTC).date()
    for n, row in enumerate(rows):
        if n % 25 == 24:
            await asyncio.sleep(0)
        batch.last, product_id = row["seq"], row["product_id"]
        if row["copies"] > 1:
            report.reject(product_id, row["place"], "PRODUCT_ID appears more than once in the file")
            continue
        try:
            body = _offer_body(row, provider["id"], status, visibility)
            if body.funding.qcg:
                try:
                    check_funding(body, provider["azav"], today)
                except RuleBroken as exc:
                    body.funding.qcg = False
                    report.warnings.append({"product_id": product_id, "where": row["place"],
                                            "warning": f"qcg not taken over: {exc.rule}"})
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
            batch.creates.append((new_id(), body, digest))
            report.count("created", product_id)
        elif current["import_hash"] == digest and current["status"] == status:
            report.counts["unchanged"] += 1
        else:
            batch.updates.append((current["id"], body, digest))
            batch.previous[current["id"]] = current["status"]
            report.count("updated", product_id)
    return batch


async def _write(conn: asyncpg.Connection, acting: Acting, batch: _Batch) -> None:
    """The batch's writes and events together: a few pipelined round trips, not a few per offer."""
    if batch.creates:
        await store.insert_offers(conn, acting.tenant, batch.creates)
    if batch.updates:
        await conn.execute("SELECT 1 FROM offers WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
                           [u[0] for u in batch.updates])
        await store.update_offers(conn, acting.tenant, batch.updates)
    if batch.creates or batch.updates:
        await handlers.announce_offers(conn, acting.tenant, [(c[0], None) for c in batch.creates]
                                       + [(u[0], batch.previous[u[0]]) for u in batch.updates])


async def _apply_offers(conn: asyncpg.Connection, acting: Acting, provider: asyncpg.Record, status: str,
                        visibility: dict, report: ImportReport, progress: Progress | None) -> None:
    """Batch by batch, the next one is read and validated (Python) while the one before is written
    (PostgreSQL): the two share the work of an import between the two sides. One statement at a time
    on the connection: the next batch is read before the previous one's writes start."""
    rows, existing = await _read_batch(conn, provider["id"], 0)
    batch = await _prepare(rows, existing, provider, status, visibility, report)
    done = 0
    while batch.size:
        rows, existing = await _read_batch(conn, provider["id"], batch.last)
        writing = asyncio.ensure_future(_write(conn, acting, batch))
        try:
            following = await _prepare(rows, existing, provider, status, visibility, report)
        finally:
            await writing  # (also when validating failed: the connection is free before the caller rolls back)
        done += batch.size
        if progress:
            progress("apply", done, report.offers_in_file)
        batch = following


async def _replace_rest(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID,
                        report: ImportReport) -> None:
    """NEW_CATALOG is the provider's whole catalogue: what it no longer lists is withdrawn."""
    rows = await conn.fetch(
        "SELECT o.id, coalesce(o.external_id, o.id::text) AS product_id FROM offers o"
        " WHERE o.provider_id = $1 AND o.status <> 'withdrawn' AND NOT EXISTS"
        " (SELECT 1 FROM import_staging s WHERE s.kind = 'offer' AND s.product_id = o.external_id)", provider_id)
    for row in rows:
        await handlers.withdraw_offer(conn, acting, row["id"])
        report.count("deleted", row["product_id"])


async def import_catalogue(conn: asyncpg.Connection, acting: Acting, provider_id: uuid.UUID,
                           records: Iterator[Record | str], *, status: str = "published",
                           visibility: dict | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Apply a delivery for one provider the actor acts for, in the caller's transaction."""
    provider = await handlers.own_provider(conn, acting, provider_id)
    report = ImportReport(mode="")
    await _stage(conn, records, report, progress)
    await _orphans(conn, report)
    if report.mode == "UPDATE_CATALOG":
        await _delete_section(conn, acting, provider_id, report)
    await _apply_offers(conn, acting, provider, status, visibility or {"scope": "home", "networks": []},
                        report, progress)
    if report.mode == "NEW_CATALOG":
        await _replace_rest(conn, acting, provider_id, report)
    return report.as_dict()
