"""Transactional outbox: the business change and its event row commit together; a relay,
woken by LISTEN/NOTIFY, publishes rows in order and re-sends whatever is still unsent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg
from kafka import KafkaProducer

from runtime import metrics
from runtime.events import Event, validate
from runtime.loops import ListeningLoop

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "outbox"


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event: Event) -> None:
    """Validate against the contract and stage the event in the caller's transaction."""
    validate(event)
    await conn.execute(
        "INSERT INTO outbox (topic, event_id, event_type, tenant_id, aggregate_key, headers, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        topic, event.id, event.type, event.tenant, event.key,
        [[k, v.decode()] for k, v in event.headers()], event.value(),
    )
    # Delivered at commit, and only if the transaction commits.
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


class OutboxRelay(ListeningLoop):
    """Publishes unsent outbox rows in id order. One relay per service database holds an
    advisory lock, so rows of one aggregate are never published out of order by two relays."""

    channel = NOTIFY_CHANNEL

    def __init__(
        self,
        dsn: str,
        producer_factory: Callable[[], KafkaProducer],
        *,
        sweep_seconds: float = 2.0,
        batch_size: int = 500,
        retention_hours: float = 24.0,
    ) -> None:
        super().__init__(dsn, interval=sweep_seconds)
        self._producer_factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._batch_size = batch_size
        self._retention_hours = retention_hours
        self._purged_at = 0.0

    async def acquire(self, conn: asyncpg.Connection) -> bool:
        while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('outbox-relay'))"):
            if await self.sleep():
                return False
        return True

    async def work(self, conn: asyncpg.Connection) -> bool:
        if time.monotonic() - self._purged_at > 60:
            # Sent rows stay a while for inspection, then go: the topic is the record.
            await conn.execute("DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)",
                               self._retention_hours * 3600)
            self._purged_at = time.monotonic()
        rows = await conn.fetch(
            "SELECT id, topic, aggregate_key, headers, payload FROM outbox"
            " WHERE sent_at IS NULL ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if not rows:
            return False
        ids = [r["id"] for r in rows]
        try:
            await asyncio.to_thread(self._send_all, rows)
        except Exception as exc:
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)", ids, repr(exc)[:2000]
            )
            raise
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)", ids)
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows) == self._batch_size

    def _send_all(self, rows: list[asyncpg.Record]) -> None:
        if self._producer is None:
            self._producer = self._producer_factory()
        futures = [
            self._producer.send(
                r["topic"],
                key=r["aggregate_key"].encode(),
                value=bytes(r["payload"]),
                headers=[(k, v.encode()) for k, v in r["headers"]],
            )
            for r in rows
        ]
        self._producer.flush(timeout=15)
        for future in futures:
            future.get(timeout=15)

    def on_failure(self) -> None:
        # After a broker restart an old producer keeps failing (UnknownProducerIdError): recreate it.
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                log.debug("closing producer failed", exc_info=True)
            self._producer = None
