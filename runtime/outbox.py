"""Transactional outbox: the business change and its event row commit together; a relay,
woken by LISTEN/NOTIFY, publishes rows in order per aggregate and re-sends whatever is still unsent.

Order per aggregate (topic and key) holds also when a send fails: the relay sends an aggregate's
rows one after another, never a later one before the earlier is acknowledged, and a row that fails
holds back only its own aggregate (retried with backoff), never the others. A row that can never
be sent shows in ``outbox_stuck_rows`` / ``outbox_oldest_pending_age_seconds`` and an operator
skips it with ``python -m runtime outbox-skip`` (the reason is kept in the row)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from runtime import metrics
from runtime.errors import EventTooLarge
from runtime.events import SEQUENCE_HEADER, Event, validate
from runtime.kafka import MAX_EVENT_BYTES, record_size
from runtime.loops import ListeningLoop

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "outbox"
# A row that failed this often is counted as stuck (the metric the alert watches).
STUCK_AFTER_ATTEMPTS = 3
# Pending: neither sent nor skipped by an operator.
PENDING = "sent_at IS NULL AND skipped_at IS NULL"


_INSERT_ROW = (
    "INSERT INTO outbox (topic, event_id, event_type, tenant_id, aggregate_key, headers, payload, sequence)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")


@dataclass(frozen=True)
class Outgoing:
    """An event checked against its contract, its payload encoded and its size checked: what the
    outbox writes once the event has its aggregate's sequence. Built ahead where that pays: an
    import prepares a batch's events while the batch before is written, so that PostgreSQL does not
    wait for them between the batch's statements."""

    event: Event
    payload: bytes
    headers: list[list[str]]  # but the sequence's


def outgoing(event: Event) -> Outgoing:
    """The event checked, or InvalidEvent; EventTooLarge (HTTP 413) when the record would exceed what
    the broker accepts: refused here, where the request can still fail cleanly, never discovered by
    the relay. The sequence, given at write time, is counted at its widest."""
    validate(event)
    payload, headers = event.value(), event.headers()
    size = record_size(event.key.encode(), payload, [*headers, (SEQUENCE_HEADER, b"9" * 20)])
    if size > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"the {event.type} event would be {size} bytes, more than the {MAX_EVENT_BYTES} bytes an event may have")
    return Outgoing(event, payload, [[k, v.decode()] for k, v in headers])


def _row(topic: str, item: Outgoing, sequence: int) -> tuple:
    event = item.event
    # the headers as Event.headers() gives them once the event has its sequence
    headers = [*item.headers, [SEQUENCE_HEADER, str(sequence)]]
    return topic, event.id, event.type, event.tenant, event.key, headers, item.payload, sequence


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event: Event) -> int:
    """Validate against the contract, check the size, give the event its aggregate's next sequence
    and stage it in the caller's transaction. Returns the sequence."""
    return await _stage(conn, topic, outgoing(event))


# Each aggregate's next number, above the epoch an operator raises after a restore (migration 0005).
_NEXT_SEQUENCE = (
    "INSERT INTO outbox_sequences AS q (topic, aggregate_key, last_sequence)"
    " SELECT $1, k, e.epoch + 1 FROM unnest($2::text[]) k, outbox_epoch e"
    " ON CONFLICT (topic, aggregate_key) DO UPDATE"
    " SET last_sequence = greatest(q.last_sequence, (SELECT epoch FROM outbox_epoch)) + 1"
    " RETURNING aggregate_key, last_sequence")
RESTORE_EPOCH_STEP = 10**12  # more events than any aggregate has between a restore point and the restore


async def raise_epoch(conn: asyncpg.Connection) -> int:
    """After a restore to an earlier time: every number given from now on lies above any this
    database gave before the restore (and so above what consumers applied). Returns the new epoch."""
    return await conn.fetchval(
        "UPDATE outbox_epoch SET epoch = greatest(epoch, (SELECT coalesce(max(last_sequence), 0)"
        " FROM outbox_sequences)) + $1 RETURNING epoch", RESTORE_EPOCH_STEP)


async def _stage(conn: asyncpg.Connection, topic: str, item: Outgoing) -> int:
    # The sequence row is locked to commit: an aggregate's events get their numbers in commit order.
    sequence = (await conn.fetchrow(_NEXT_SEQUENCE, topic, [item.event.key]))["last_sequence"]
    await conn.execute(_INSERT_ROW, *_row(topic, item, sequence))
    # Delivered at commit, and only if the transaction commits.
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return sequence


async def add_many_to_outbox(conn: asyncpg.Connection, topic: str, events: Sequence[Event | Outgoing]) -> None:
    """``add_to_outbox`` for many events of distinct aggregates at once (a batch of an import): the
    same contract check and size limit for each (done already for those given as ``Outgoing``),
    their sequences in one statement, the rows in another and one NOTIFY. Events of one aggregate in
    the batch go one by one."""
    items = [e if isinstance(e, Outgoing) else outgoing(e) for e in events]
    if len({i.event.key for i in items}) != len(items):
        for item in items:
            await _stage(conn, topic, item)
        return
    rows = await conn.fetch(_NEXT_SEQUENCE, topic, [i.event.key for i in items])
    sequences = {r["aggregate_key"]: r["last_sequence"] for r in rows}
    staged = [_row(topic, item, sequences[item.event.key]) for item in items]
    if staged:
        # one statement for the batch, the columns as arrays (a statement per row was most of its time);
        # the headers as JSON text, since a list of pairs would be read as a dimension of the array
        columns = [list(column) for column in zip(*staged, strict=True)]
        columns[5] = [orjson.dumps(headers).decode() for headers in columns[5]]
        await conn.execute(
            "INSERT INTO outbox (topic, event_id, event_type, tenant_id, aggregate_key, headers, payload, sequence)"
            " SELECT t, e, y, n, k, h::jsonb, p, s FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[],"
            " $5::text[], $6::text[], $7::bytea[], $8::bigint[]) AS r(t, e, y, n, k, h, p, s)", *columns)
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


class BrokerUnavailable(Exception):
    """Every send of a round failed: the broker (or the producer) is the problem, not the rows."""


class OutboxRelay(ListeningLoop):
    """Publishes pending outbox rows in order per aggregate. One relay per service database holds an
    advisory lock, so rows of one aggregate are never published out of order by two relays. It also
    purges sent outbox rows and inbox rows past their retention."""

    channel = NOTIFY_CHANNEL

    def __init__(
        self,
        dsn: str,
        producer_factory: Callable[[], KafkaProducer],
        *,
        sweep_seconds: float = 2.0,
        batch_size: int = 500,
        retention_hours: float = 24.0,
        inbox_retention_hours: float = 744.0,  # ServiceSettings.inbox_retention_hours
        max_retry_seconds: float = 60.0,
    ) -> None:
        super().__init__(dsn, interval=sweep_seconds)
        self._producer_factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._batch_size = batch_size
        self._retention_hours = retention_hours
        self._inbox_retention_hours = inbox_retention_hours
        self._max_retry_seconds = max_retry_seconds
        self._purged_at = 0.0
        self._measured_at = 0.0

    async def acquire(self, conn: asyncpg.Connection) -> bool:
        while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('outbox-relay'))"):
            # Only the relay holding the lock measures the backlog: a replica waiting for it shows
            # none, not what it last saw (alerts take the maximum over the replicas).
            for gauge in (metrics.OUTBOX_PENDING, metrics.OUTBOX_OLDEST_PENDING_AGE, metrics.OUTBOX_STUCK):
                gauge.set(0)
            if await self.sleep():
                return False
        return True

    async def work(self, conn: asyncpg.Connection) -> bool:
        await self._maintain(conn)
        # An aggregate whose oldest pending row waits for its retry sends nothing until then.
        rows = await conn.fetch(
            "SELECT id, topic, aggregate_key, headers, payload, attempts FROM outbox o"
            f" WHERE {PENDING} AND NOT EXISTS ("
            "   SELECT 1 FROM outbox w WHERE w.sent_at IS NULL AND w.skipped_at IS NULL"
            "    AND w.topic = o.topic AND w.aggregate_key = o.aggregate_key AND w.retry_at > now())"
            " ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if not rows:
            return False
        sent, failed = await asyncio.to_thread(self._send_in_order, rows)
        if sent:
            await conn.execute("UPDATE outbox SET sent_at = now(), retry_at = NULL WHERE id = ANY($1)", sent)
            metrics.OUTBOX_PUBLISHED.inc(len(sent))
        for row_id, error in failed.items():
            attempts = next(r["attempts"] for r in rows if r["id"] == row_id) + 1
            delay = min(0.5 * 2 ** (attempts - 1), self._max_retry_seconds)
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2,"
                " retry_at = now() + make_interval(secs => $3) WHERE id = $1",
                row_id, error[:2000], delay if sent else 0.0,
            )
        if failed and not sent:
            # Nothing went through: the broker is away. Back off as a whole and recreate the producer.
            raise BrokerUnavailable(next(iter(failed.values())))
        return len(rows) == self._batch_size or bool(failed)

    def _send_in_order(self, rows: list[asyncpg.Record]) -> tuple[list[int], dict[int, str]]:
        """Send in waves: each wave holds the next row of every aggregate and waits for all acks,
        so a later row of an aggregate is never on the wire before the earlier one is acknowledged.
        An aggregate whose row fails, whether the producer refuses it or the broker does not
        acknowledge it, drops out of the round (its later rows wait for the retry); the round goes
        on, so the rows acknowledged are recorded as sent and one row never holds back the others."""
        if self._producer is None:
            self._producer = self._producer_factory()
        chains: dict[tuple[str, str], deque[asyncpg.Record]] = {}
        for row in rows:
            chains.setdefault((row["topic"], row["aggregate_key"]), deque()).append(row)
        sent: list[int] = []
        failed: dict[int, str] = {}

        def fail(aggregate: tuple[str, str], row: asyncpg.Record, exc: Exception) -> None:
            failed[row["id"]] = repr(exc)
            chains.pop(aggregate, None)
            metrics.OUTBOX_SEND_FAILURES.labels(row["topic"]).inc()

        while chains:
            wave, tried = [], []
            for aggregate, chain in list(chains.items()):
                row = chain.popleft()
                tried.append(row["id"])
                if not chain:
                    del chains[aggregate]
                try:
                    future = self._producer.send(
                        row["topic"], key=row["aggregate_key"].encode(), value=bytes(row["payload"]),
                        headers=[(k, v.encode()) for k, v in row["headers"]],
                    )
                except Exception as exc:  # refused before the wire: too large (a row written before the
                    fail(aggregate, row, exc)  # size check), a topic the broker does not know (its metadata
                    continue                   # never comes: KafkaTimeoutError), a producer gone bad
                wave.append((aggregate, row, future))
            try:
                self._producer.flush(timeout=15)
                wait = 15.0
            except KafkaTimeoutError:  # a partition without a leader: what is not acknowledged by now fails
                wait = 0.0
            for aggregate, row, future in wave:
                try:
                    future.get(timeout=wait)
                    sent.append(row["id"])
                except Exception as exc:
                    fail(aggregate, row, exc)
            if tried and all(i in failed for i in tried) and not sent:
                break  # the broker refuses everything: no point going through the rest of the batch
        return sent, failed

    async def _maintain(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        if now - self._measured_at > 1:
            pending, oldest, stuck = await conn.fetchrow(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0),"
                f" count(*) FILTER (WHERE attempts >= $1) FROM outbox WHERE {PENDING}", STUCK_AFTER_ATTEMPTS)
            metrics.OUTBOX_PENDING.set(pending)
            metrics.OUTBOX_OLDEST_PENDING_AGE.set(float(oldest))
            metrics.OUTBOX_STUCK.set(stuck)
            self._measured_at = now
        if now - self._purged_at > 60:
            # Sent rows stay a while for inspection, then go: the topic is the record. Skipped rows stay
            # (they hold the operator's reason). Inbox rows go once the topic can no longer redeliver them.
            await conn.execute("DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)",
                               self._retention_hours * 3600)
            await conn.execute("DELETE FROM inbox WHERE received_at < now() - make_interval(secs => $1)",
                               self._inbox_retention_hours * 3600)
            self._purged_at = now

    def on_failure(self) -> None:
        # After a broker restart an old producer keeps failing (UnknownProducerIdError): recreate it.
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                log.debug("closing producer failed", exc_info=True)
            self._producer = None


async def stuck_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Pending rows that failed at least once, oldest first: what an operator looks at."""
    return await conn.fetch(
        "SELECT id, topic, aggregate_key, event_type, sequence, attempts, last_error, created_at, retry_at"
        f" FROM outbox WHERE {PENDING} AND attempts > 0 ORDER BY id")


async def skip_row(conn: asyncpg.Connection, row_id: int, reason: str, operator: str) -> asyncpg.Record:
    """Take a row out of the relay's way for good, recording who and why. The row stays in the table."""
    if not reason.strip():
        raise ValueError("a reason is required")
    row = await conn.fetchrow(
        "UPDATE outbox SET skipped_at = now(), skip_reason = $2, skipped_by = $3"
        f" WHERE id = $1 AND {PENDING} RETURNING id, topic, aggregate_key, event_type, sequence",
        row_id, reason, operator)
    if row is None:
        raise LookupError(f"no pending outbox row {row_id}")
    log.warning("outbox row skipped by operator", extra={"row": row_id, "reason": reason, "operator": operator})
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")  # its aggregate's later rows may go now
    return row


async def resend_since(conn: asyncpg.Connection, seconds: float) -> int:
    """Mark rows sent in the last ``seconds`` pending again: after a broker lost what it held (an
    in-memory broker restarted, a topic recreated), the relay publishes them once more, in order.
    Consumers drop what they had already (inbox by id, state topics by sequence)."""
    count = await conn.fetchval(
        "WITH again AS (UPDATE outbox SET sent_at = NULL, retry_at = NULL"
        " WHERE sent_at > now() - make_interval(secs => $1) RETURNING 1) SELECT count(*) FROM again", seconds)
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return count
