"""Idempotent Kafka consumers: each event's effects and its inbox row commit in one transaction,
offsets are committed only after that, and an event that keeps failing goes to ``<topic>.dlq``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from runtime import metrics
from runtime.db import set_tenant
from runtime.events import Event, InvalidEvent, validate
from runtime.kafka import dead_letter_topic
from runtime.tracing import continue_trace

log = logging.getLogger(__name__)

# Failures of the ground under a handler, not of the event: retried without limit, never dead-lettered.
INFRASTRUCTURE_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)

EventHandler = Callable[[asyncpg.Connection, Event], Awaitable[None]]


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
    ) -> None:
        self.name = name
        self._pool = pool
        self._handlers = handlers
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
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
            for tp, records in batch.items():
                for record in records:
                    await self.process(record)
                last = records[-1].offset
                await asyncio.to_thread(
                    consumer.commit, {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(last + 1, "", -1)}
                )

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
        error, attempt, outage = "", 0, 0
        while attempt < self._max_attempts:
            try:
                await self._handle_once(event, handler)
                return
            except INFRASTRUCTURE_ERRORS as exc:
                # The database or network is away: not the event's fault. Hold the partition and
                # wait for it to come back; the offset is not committed meanwhile.
                outage += 1
                log.warning("handling %s waits for infrastructure: %s", event.type, exc,
                            extra={"consumer": self.name, "event_id": event.id})
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(min(self._retry_delay * 2 ** min(outage, 6), 10))
            except Exception as exc:
                attempt += 1
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "handling %s failed (attempt %d/%d): %s", event.type, attempt, self._max_attempts, error,
                    extra={"consumer": self.name, "event_id": event.id},
                )
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))
        await self._dead_letter(record, error)

    async def _handle_once(self, event: Event, handler: EventHandler) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                self.name, event.id, event.type,
            )
            if not fresh:
                metrics.EVENTS_CONSUMED.labels(self.name, event.type, "duplicate").inc()
                return
            await set_tenant(conn, event.tenant)
            await handler(conn, event)
        metrics.EVENTS_CONSUMED.labels(self.name, event.type, "handled").inc()

    async def _dead_letter(self, record: ConsumerRecord, error: str) -> None:
        log.error("dead-lettering record from %s: %s", record.topic, error, extra={"consumer": self.name})
        headers = list(record.headers or []) + [
            ("dlq_error", error[:4000].encode()),
            ("dlq_consumer", self.name.encode()),
            ("dlq_source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        if self._producer is None:
            self._producer = await asyncio.to_thread(self._producer_factory)
        future = self._producer.send(
            dead_letter_topic(record.topic), key=record.key, value=record.value, headers=headers
        )
        await asyncio.to_thread(future.get, 15)
        metrics.EVENTS_CONSUMED.labels(self.name, "?", "dead_lettered").inc()
