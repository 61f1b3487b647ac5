"""Idempotent Kafka consumers: each event's effects and its inbox row commit in one transaction,
offsets are committed only after that, and an event that keeps failing goes to ``<topic>.dlq``."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection

import asyncpg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RecordListTooLargeError
from kafka.structs import OffsetAndMetadata

from runtime import metrics
from runtime.db import TRANSIENT_DATABASE_ERRORS, set_tenant
from runtime.events import Event, InvalidEvent, validate
from runtime.kafka import STATE_TOPICS, connection_options, dead_letter_topic
from runtime.settings import ServiceSettings
from runtime.tracing import continue_trace

log = logging.getLogger(__name__)

EventHandler = Callable[[asyncpg.Connection, Event], Awaitable[None]]
# Called with a polled batch's events before they are handled one by one, outside any transaction:
# work several events share done once (matching encodes the new offers' texts together).
BatchPreparer = Callable[[list[Event]], Awaitable[None]]


async def apply_if_newer(conn: asyncpg.Connection, consumer: str, aggregate: str, sequence: int | None) -> bool:
    """In the handler's transaction: True when ``sequence`` is newer than the last one this consumer
    applied for ``aggregate`` (and record it), False for a stale or repeated one, which must not be
    applied. Events without a sequence (written before sequences existed) are always applied.

    The inbox does this itself for the STATE_TOPICS (key = aggregate). A handler whose topic's key
    groups several aggregates calls it with its own aggregate name, e.g. ``f"match:{demand}:{offer}"``."""
    if sequence is None:
        return True
    return bool(await conn.fetchval(
        "INSERT INTO inbox_sequences AS s (consumer, aggregate, sequence) VALUES ($1, $2, $3)"
        " ON CONFLICT (consumer, aggregate) DO UPDATE SET sequence = excluded.sequence, applied_at = now()"
        " WHERE s.sequence < excluded.sequence RETURNING true",
        consumer, aggregate, sequence,
    ))


class EventConsumer:
    def __init__(
        self,
        *,
        name: str,
        pool: asyncpg.Pool,
        handlers: dict[str, EventHandler],
        consumer_factory: Callable[[], KafkaConsumer],
        producer_factory: Callable[[], KafkaProducer],
        max_attempts: int = 5,
        retry_delay: float = 0.2,
        ordered_topics: Collection[str] = STATE_TOPICS,
        prepare: BatchPreparer | None = None,
    ) -> None:
        self.name = name
        self._prepare = prepare
        self._pool = pool
        self._handlers = handlers
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._ordered_topics = frozenset(ordered_topics)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            consumer = None
            try:
                consumer = await asyncio.to_thread(self._consumer_factory)
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s failed; reconnecting", self.name)
                await asyncio.sleep(1)
            finally:
                if consumer is not None:
                    await asyncio.to_thread(consumer.close)
                if self._producer is not None:
                    await asyncio.to_thread(self._producer.close, 1)
                    self._producer = None

    async def _consume(self, consumer: KafkaConsumer) -> None:
        while not self._stopping.is_set():
            batch = await asyncio.to_thread(consumer.poll, 200)
            if self._prepare is not None and batch:
                await self._prepare_batch([record for records in batch.values() for record in records])
            for tp, records in batch.items():
                for record in records:
                    await self.process(record)
                last = records[-1].offset
                await asyncio.to_thread(
                    consumer.commit, {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(last + 1, "", -1)}
                )

    async def _prepare_batch(self, records: list[ConsumerRecord]) -> None:
        """Only a head start: an event the preparer cannot read is left to ``process`` (which
        dead-letters it), and a failure of the preparer is logged, the events then handled alone."""
        events = []
        for record in records:
            try:
                events.append(Event.from_record(record.key, record.value, record.headers))
            except Exception:  # unreadable: process dead-letters it
                continue
        try:
            await self._prepare(events)
        except Exception:
            log.exception("preparing a batch of %d events failed; handling them one by one", len(events),
                          extra={"consumer": self.name})

    async def process(self, record: ConsumerRecord) -> None:
        try:
            event = Event.from_record(record.key, record.value, record.headers)
            continue_trace(event.traceparent)
            handler = self._handlers.get(event.type)
            if handler is None:
                # Another consumer's type, or a version this one has not moved to yet.
                metrics.EVENTS_CONSUMED.labels(self.name, event.type, "ignored").inc()
                return
            validate(event)
        except InvalidEvent as exc:
            await self._dead_letter(record, str(exc))
            return
        except Exception as exc:  # a record shaped as no event should be: its fault, not the consumer's end
            await self._dead_letter(record, f"unreadable record: {type(exc).__name__}: {exc}")
            return
        error, attempt, outage = "", 0, 0
        while True:
            try:
                await self._handle_once(record.topic, event, handler)
                return
            except Exception as exc:
                if await self._is_outage(exc):
                    # Not the event's fault: hold the partition (the offset is not committed) and try
                    # again until the ground is back; a deadlock's loser simply goes again.
                    outage += 1
                    metrics.EVENTS_RETRIED.labels(self.name, "transient").inc()
                    log.warning("handling %s waits for the database: %r", event.type, exc,
                                extra={"consumer": self.name, "event_id": event.id})
                    if self._stopping.is_set():
                        raise
                    delay = min(self._retry_delay * 2 ** min(outage - 1, 6), 10)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter: deadlock peers part ways
                    continue
                attempt += 1
                error = f"{type(exc).__name__}: {exc}"
                metrics.EVENTS_RETRIED.labels(self.name, "failure").inc()
                log.warning(
                    "handling %s failed (attempt %d/%d): %s", event.type, attempt, self._max_attempts, error,
                    extra={"consumer": self.name, "event_id": event.id},
                )
                if attempt >= self._max_attempts:
                    break
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))
        await self._dead_letter(record, error)

    async def _is_outage(self, exc: Exception) -> bool:
        """Whether a failure is the database's (wait) rather than the handler's (count, then give up).
        An OSError or TimeoutError may be either: it is an outage only while the database is unreachable."""
        chain: list[BaseException] = []
        cause: BaseException | None = exc
        while cause is not None and len(chain) < 10:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        # A connection lost mid-transaction surfaces as the transaction's InterfaceError on exit.
        if any(isinstance(e, TRANSIENT_DATABASE_ERRORS) for e in chain):
            return True
        if isinstance(exc, OSError | asyncpg.InterfaceError):  # TimeoutError is an OSError
            try:
                async with asyncio.timeout(5), self._pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
            except Exception:
                return True
        return False

    async def _handle_once(self, topic: str, event: Event, handler: EventHandler) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                self.name, event.id, event.type,
            )
            if not fresh:
                metrics.EVENTS_CONSUMED.labels(self.name, event.type, "duplicate").inc()
                return
            if topic in self._ordered_topics and not await apply_if_newer(
                    conn, self.name, f"{topic}/{event.key}", event.sequence):
                # A newer state of this aggregate is applied already (a replay, a re-send): keep it.
                metrics.EVENTS_CONSUMED.labels(self.name, event.type, "stale").inc()
                return
            await set_tenant(conn, event.tenant)
            await handler(conn, event)
        metrics.EVENTS_CONSUMED.labels(self.name, event.type, "handled").inc()

    async def _dead_letter(self, record: ConsumerRecord, error: str) -> None:
        log.error("dead-lettering record from %s: %s", record.topic, error, extra={"consumer": self.name})
        # a header without a value (Java clients send such) as empty: kafka-python sends bytes only
        headers = [(k, v or b"") for k, v in record.headers or []] + [
            ("dlq_error", error[:4000].encode()),
            ("dlq_consumer", self.name.encode()),
            ("dlq_source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        if self._producer is None:
            self._producer = await asyncio.to_thread(self._producer_factory)
        try:
            await asyncio.to_thread(self._producer.send(
                dead_letter_topic(record.topic), key=record.key, value=record.value, headers=headers).get, 15)
        except (MessageSizeTooLargeError, RecordListTooLargeError):
            # a record near the broker's limit has no room for the reasons: its place and reason go, the
            # body stays in the source topic for its retention (dlq_source says where)
            headers[-3] = ("dlq_error", f"{error[:2000]} {TOO_LARGE_TO_DEAD_LETTER} ({len(record.value or b'')}"
                                        " bytes: read it at dlq_source)".encode())
            await asyncio.to_thread(self._producer.send(
                dead_letter_topic(record.topic), key=record.key, value=b"",
                headers=[h for h in headers if h[0].startswith("dlq_") or h[0].startswith("ce_")]).get, 15)
        metrics.EVENTS_CONSUMED.labels(self.name, "?", "dead_lettered").inc()


TOO_LARGE_TO_DEAD_LETTER = "[dead-lettered without its body: too large]"  # the replay passes such ones over
REPLAY_GROUPS = "dlq-replay."  # the prefix of the replay's consumer groups (the dlq-replay KafkaUser reads them)


class ReplayIncomplete(Exception):
    """Some dead letters could not be published back; the replay's position stops before the first."""


def replay_dead_letters(settings: ServiceSettings, topic: str, *, consumer: str | None = None) -> int:
    """Publish what ``<topic>.dlq`` holds back into ``topic`` (once its cause is fixed), with the
    original key, id and headers. Resumes where the last replay stopped (offsets kept under a group
    per topic and consumer filter), and stops at the end the topic had when it began. Every consumer
    group of the topic sees the event again; those that handled it skip it by its id (inbox) or its
    sequence. Each record must be acknowledged: where one is not, the position is kept before it (a
    second run sends it and what follows it again, which the consumers skip as above) and
    ReplayIncomplete says how many failed. Returns how many were replayed."""
    dlq = dead_letter_topic(topic)
    connection = connection_options(settings)
    # Assigned, not subscribed: no group join to wait for; the group only keeps the offsets.
    source = KafkaConsumer(**connection, group_id=f"{REPLAY_GROUPS}{topic}.{consumer or 'all'}",
                           enable_auto_commit=False)
    producer = KafkaProducer(**connection, acks="all", max_in_flight_requests_per_connection=1)
    sends: dict[TopicPartition, list] = {}  # per partition, in offset order: (offset, future or None)
    try:
        partitions = [TopicPartition(dlq, p) for p in sorted(source.partitions_for_topic(dlq) or ())]
        source.assign(partitions)
        ends = source.end_offsets(partitions)
        for tp in partitions:
            committed = source.committed(tp)
            if committed is None:
                source.seek_to_beginning(tp)
            else:
                source.seek(tp, committed)
        while any(source.position(tp) < ends[tp] for tp in partitions):
            for tp, records in source.poll(500).items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    headers = dict(record.headers or [])
                    if consumer and (headers.get("dlq_consumer") or b"").decode() != consumer:
                        sends.setdefault(tp, []).append((record.offset, None))  # not ours: passed over
                        continue
                    if TOO_LARGE_TO_DEAD_LETTER in (headers.get("dlq_error") or b"").decode(errors="replace"):
                        log.error("not replaying %s/%d at offset %d: dead-lettered without its body (read it"
                                  " at %s)", dlq, tp.partition, record.offset,
                                  (headers.get("dlq_source") or b"?").decode(errors="replace"))
                        sends.setdefault(tp, []).append((record.offset, None))
                        continue
                    future = producer.send(topic, key=record.key, value=record.value, headers=[
                        *((k, v or b"") for k, v in record.headers or [] if not k.startswith("dlq_")),
                        ("dlq_replayed_from", f"{record.topic}/{record.partition}/{record.offset}".encode())])
                    sends.setdefault(tp, []).append((record.offset, future))
        try:
            producer.flush(timeout=30)
        except KafkaTimeoutError:
            pass  # what is not acknowledged by now counts as failed below
        replayed, failed, offsets = 0, 0, {}
        for tp, sent in sends.items():
            for k, (offset, future) in enumerate(sent):
                if future is not None:
                    try:
                        future.get(timeout=0)
                    except Exception as exc:  # flush() only logs what failed: each record is asked
                        failed += sum(1 for _, later in sent[k:] if later is not None)
                        log.error("replaying %s/%d failed at offset %d: %r", dlq, tp.partition, offset, exc)
                        break
                    replayed += 1
                offsets[tp] = OffsetAndMetadata(offset + 1, "", -1)
        if offsets:
            source.commit(offsets)
    finally:
        producer.close(timeout=5)
        source.close()
    log.info("replayed %d dead letters into %s", replayed, topic)
    if failed:
        raise ReplayIncomplete(f"{failed} dead letter(s) of {dlq} from the first the broker did not take back on"
                               f" will be sent again by the next replay ({replayed} were replayed)")
    return replayed
