"""One service process: its pool, token verifier, outbox relay and consumers, started and stopped
together (from a FastAPI lifespan), so that tests can build the same thing with other settings.

The database is migrated before, by a step of its own (``python -m services.<name> migrate``, a
Kubernetes Job locally a step of the stack), with the owner's rights: the process holds only the
app role's. Until the database has every migration this code expects, it is not ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from runtime import metrics
from runtime.auth import TokenVerifier
from runtime.db import create_pool, pending_migrations
from runtime.inbox import BatchPreparer, EventConsumer, EventHandler
from runtime.kafka import create_consumer, create_producer
from runtime.loops import ListeningLoop
from runtime.outbox import OutboxRelay
from runtime.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class ConsumerSpec:
    group: str
    topics: list[str]
    handlers: dict[str, EventHandler]
    prepare: BatchPreparer | None = None  # each polled batch's events, before they are handled


@dataclass
class ServiceRuntime:
    settings: ServiceSettings
    migrations_dir: Path
    consumer_specs: list[ConsumerSpec] = field(default_factory=list)
    extensions: tuple[str, ...] = ()  # PostgreSQL extensions created at provisioning
    # Where this service learns its tenants: known_tenants (from identity.tenants.v1), or for
    # identity its own tenants table; both have id and status.
    tenants_table: str = "known_tenants"
    # More background loops of the service (anything with run() and stop()), started after migrations.
    workers: list[ListeningLoop] = field(default_factory=list)
    # More readiness checks of the service: name -> coroutine answering "ok" or "error: ...".
    readiness_checks: dict[str, Callable[[], Awaitable[str]]] = field(default_factory=dict)

    # built by start()
    pool: asyncpg.Pool = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    verifier: TokenVerifier = field(init=False)
    relay: OutboxRelay = field(init=False)
    consumers: list[EventConsumer] = field(init=False, default_factory=list)
    _tasks: list[asyncio.Task] = field(init=False, default_factory=list)
    _tenants_seen: dict[str, float] = field(init=False, default_factory=dict)
    _stopping: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    async def start(self) -> None:
        s = self.settings
        self.pool = await create_pool(s)
        self.http = httpx.AsyncClient()
        self.verifier = TokenVerifier(s.issuer_url, s.token_audience, self.http,
                                      min_refresh_seconds=s.jwks_min_refresh_seconds,
                                      max_key_age_seconds=s.jwks_max_age_seconds, leeway_seconds=s.token_leeway_seconds,
                                      clients=frozenset(c.strip() for c in s.token_clients.split(",") if c.strip()))
        self.relay = OutboxRelay(s.database_url, lambda: create_producer(s), sweep_seconds=s.outbox_sweep_seconds,
                                 retention_hours=s.outbox_retention_hours,
                                 inbox_retention_hours=s.inbox_retention_hours)
        if s.process == "api":  # another process ("events") relays and consumes
            return
        for loop in (self.relay, *self.workers):
            self._tasks.append(asyncio.create_task(loop.run(), name=type(loop).__name__))
        self._tasks.append(asyncio.create_task(self._measure_outbox(), name="outbox-metrics"))
        for spec in self.consumer_specs:
            consumer = EventConsumer(
                name=spec.group, pool=self.pool, handlers=spec.handlers,
                consumer_factory=lambda spec=spec: create_consumer(s, spec.group, spec.topics),
                producer_factory=lambda: create_producer(s), max_attempts=s.consumer_max_attempts,
                prepare=spec.prepare,
            )
            self.consumers.append(consumer)
            self._tasks.append(asyncio.create_task(consumer.run(), name=f"consumer-{spec.group}"))

    async def _measure_outbox(self, every: float = 15.0) -> None:
        """Backlog and recent event types of the outbox as metrics: a relay that cannot publish shows
        as a growing backlog, failed mail as delivery.failed events (alerts in deploy/k8s)."""
        while not self._stopping.is_set():
            try:
                recent = await self.pool.fetch(
                    "SELECT event_type, count(*) AS n FROM outbox"
                    " WHERE created_at > now() - interval '1 hour' GROUP BY event_type")
                metrics.OUTBOX_RECENT.clear()
                for r in recent:
                    metrics.OUTBOX_RECENT.labels(r["event_type"]).set(r["n"])
            except Exception as exc:  # a database outage shows in readiness; measuring just waits
                log.debug("outbox metrics not measured: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every)

    async def stop(self) -> None:
        self._stopping.set()
        for loop in (self.relay, *self.workers, *self.consumers):
            loop.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:
                task.cancel()
        await self.http.aclose()
        await self.pool.close()

    async def tenant_exists(self, tenant_id: str) -> bool:
        """Known tenants are cached briefly: tenants are added at run time, never removed."""
        if time.monotonic() - self._tenants_seen.get(tenant_id, -1e9) < 30:
            return True
        found = bool(await self.pool.fetchval(
            f"SELECT 1 FROM {self.tenants_table} WHERE id = $1 AND status = 'active'", tenant_id))
        if found:
            self._tenants_seen[tenant_id] = time.monotonic()
        return found

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await self.pool.fetchval("SELECT 1")
            checks["database"] = "ok"
            async with self.pool.acquire() as conn:
                pending = await pending_migrations(conn, self.settings.service, self.migrations_dir)
            checks["migrations"] = "ok" if not pending else f"error: not applied: {', '.join(pending)}"
            # Until it has learned of a tenant from identity.tenants.v1, a service can serve nobody.
            known = await self.pool.fetchval(f"SELECT count(*) FROM {self.tenants_table}")
            checks["tenants"] = "ok" if known else "error: no tenant known yet"
        except Exception as exc:
            checks["database"] = f"error: {exc}"
        host, _, port = self.settings.kafka_bootstrap.split(",")[0].rpartition(":")
        try:
            await asyncio.to_thread(socket.create_connection((host, int(port)), 2).close)
            checks["broker"] = "ok"
        except OSError as exc:
            checks["broker"] = f"error: {exc}"
        try:
            response = await self.http.get(
                f"{self.settings.issuer_url}/.well-known/openid-configuration", timeout=2)
            checks["issuer"] = "ok" if response.status_code == 200 else f"error: HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            checks["issuer"] = f"error: {exc}"
        for name, check in self.readiness_checks.items():
            try:
                checks[name] = await check()
            except Exception as exc:
                checks[name] = f"error: {exc}"
        return checks
