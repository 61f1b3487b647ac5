"""Notifications below Kafka, against the real things: PostgreSQL (row-level security), Redis, Celery
worker processes, and SMTP (the local sink). Events go straight into the consumer handlers inside an
inbox-like transaction; the dispatcher runs in this process, the worker in subprocesses.

Exactly one mail per (match, provider) when the event is replayed, the task enqueued twice, a pool
process or the whole worker killed mid-send; temporary SMTP failures retry, permanent ones fail;
the delivery log and preferences are tenant-scoped; the unsubscribe link works without login.
"""

from __future__ import annotations

import asyncio
import email
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import httpx
import pytest
import redis
from aiosmtpd.controller import Controller

from contracts import MATCH_FOUND, MATCH_RETRACTED, PROVIDER_REGISTERED, PROVIDER_UPDATED, TENANT_CREATED
from deploy.local.smtp_sink import SmtpSink
from deploy.local.stack import stack_slot
from runtime.auth import Principal
from runtime.db import create_pool, migrate, set_tenant, system_transaction, tenant_transaction
from runtime.events import Event, validate
from runtime.http import create_app as create_http_app
from runtime.http import get_principal
from runtime.service import ServiceRuntime
from services.notifications import api, domain, store
from services.notifications.bootstrap import MIGRATIONS, NotificationsSettings
from services.notifications.consumers import create_handlers
from services.notifications.dispatcher import DeliveryDispatcher, celery_enqueue
from services.notifications.worker import create_celery

ROOT = Path(__file__).resolve().parents[2]
SLOT = stack_slot()
PREFIX = f"brnotif_test{SLOT or ''}"
REDIS_URL = f"redis://127.0.0.1:6379/{2 * SLOT if SLOT else 13}"
QUEUE = f"notifications-brnotif-test{SLOT or ''}"
T_A, T_B = "hellweg-hochsauerland", "lueneburg"
SECRET = secrets.token_urlsafe(48)  # made per run, as `make up` makes its own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the components --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def settings() -> NotificationsSettings:
    return NotificationsSettings(
        env="test", database_prefix=PREFIX, redis_url=REDIS_URL, celery_queue=QUEUE, smtp_port=_free_port(),
        public_base_url="http://notifications.test", retry_base_seconds=0.5, retry_max_seconds=4,
        max_attempts=8, celery_visibility_timeout=4, celery_restore_interval=1,
        sweep_interval_seconds=0.2, sweep_grace_seconds=60, unsubscribe_secret=SECRET,
        portal_base_url="http://portal.test", smtp_idle_check_seconds=0.5,
    )


def _env(settings: NotificationsSettings) -> dict[str, str]:
    return {
        **os.environ,
        "BR_ENV": "test", "BR_DATABASE_PREFIX": PREFIX, "BR_POSTGRES_ADMIN_URL": settings.postgres_admin_url,
        "BR_POSTGRES_HOST": settings.postgres_host, "BR_POSTGRES_PORT": str(settings.postgres_port),
        "BR_REDIS_URL": REDIS_URL, "BR_CELERY_QUEUE": QUEUE,
        "BR_SMTP_HOST": settings.smtp_host, "BR_SMTP_PORT": str(settings.smtp_port),
        "BR_PUBLIC_BASE_URL": settings.public_base_url,
        "BR_RETRY_BASE_SECONDS": str(settings.retry_base_seconds),
        "BR_RETRY_MAX_SECONDS": str(settings.retry_max_seconds), "BR_MAX_ATTEMPTS": str(settings.max_attempts),
        "BR_CELERY_VISIBILITY_TIMEOUT": str(settings.celery_visibility_timeout),
        "BR_CELERY_RESTORE_INTERVAL": str(settings.celery_restore_interval),
        "BR_UNSUBSCRIBE_SECRET": SECRET, "BR_PORTAL_BASE_URL": settings.portal_base_url,
        "BR_SMTP_IDLE_CHECK_SECONDS": str(settings.smtp_idle_check_seconds),
    }


class Worker:
    """``python -m services.notifications.worker worker`` in its own process group."""

    def __init__(self, settings: NotificationsSettings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        log_path = self.log_dir / f"celery-worker-{self.generation}.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.notifications.worker", "worker",
                 "-Q", QUEUE, "-c", "2", "--without-mingle", "--without-gossip",
                 "-n", f"brnotif-test-{self.generation}@%h", "--loglevel", "INFO"],
                cwd=ROOT, env=_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while b" ready." not in log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def pool_processes(self) -> list[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def kill(self) -> None:
        """SIGKILL to the worker and its pool processes: a machine dying mid-send."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


@pytest.fixture(scope="module")
async def database(settings):
    admin = await asyncpg.connect(settings.postgres_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{settings.database_name}" WITH (FORCE)')
    finally:
        await admin.close()
    await migrate(settings, MIGRATIONS)
    pool = await create_pool(settings)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def sink(settings, tmp_path_factory):
    sink = SmtpSink(tmp_path_factory.mktemp("mail"), settings.smtp_host, settings.smtp_port).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def worker(settings, database, sink, tmp_path_factory):
    redis.Redis.from_url(REDIS_URL).flushdb()  # this test's Redis database only
    worker = Worker(settings, tmp_path_factory.mktemp("log"))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
async def dispatch(settings, database):
    celery_app = create_celery(settings)
    enqueue = celery_enqueue(celery_app, settings)
    dispatcher = DeliveryDispatcher(settings, enqueue)
    task = asyncio.create_task(dispatcher.run())
    yield SimpleNamespace(dispatcher=dispatcher, enqueue=enqueue)
    dispatcher.stop()
    await asyncio.wait_for(task, 10)
    celery_app.close()


@pytest.fixture(scope="module")
async def system(settings, database, sink, worker, dispatch):
    """Everything running, the two tenants known."""
    handlers = create_handlers(settings)
    for tenant, name in ((T_A, "Bildungsraum Hellweg-Hochsauerland"), (T_B, "Bildungsraum Lüneburg")):
        await handle(database, handlers, Event(TENANT_CREATED, "identity", tenant, tenant,
                                               {"id": tenant, "name": name, "status": "active"}))
    return SimpleNamespace(pool=database, handlers=handlers, sink=sink, worker=worker, settings=settings,
                           enqueue=dispatch.enqueue)


# ---- helpers -----------------------------------------------------------------------------------

async def handle(pool: asyncpg.Pool, handlers: dict, event: Event) -> None:
    """What runtime.inbox.EventConsumer does per event: validate, inbox row, tenant, handler, commit."""
    validate(event)
    async with pool.acquire() as conn, conn.transaction():
        fresh = await conn.fetchval(
            "INSERT INTO inbox (consumer, event_id, event_type) VALUES ('notifications', $1, $2)"
            " ON CONFLICT DO NOTHING RETURNING true", event.id, event.type)
        if not fresh:
            return
        await set_tenant(conn, event.tenant)
        await handlers[event.type](conn, event)


def provider_event(tenant: str, provider_id: str, emails: list[str], name: str = "Technikum Sauerland",
                   version: int = 1, event_type: str = PROVIDER_REGISTERED) -> Event:
    return Event(event_type, "catalog", tenant, provider_id,
                 {"id": provider_id, "tenant": tenant, "name": name, "emails": emails, "version": version})


def match_event(provider_id: str, *, demand_tenant: str = T_A, offer_tenant: str = T_A,
                title: str = "SPS-Programmierung für Instandhalter") -> Event:
    match_id = str(uuid.uuid4())
    return Event(MATCH_FOUND, "matching", demand_tenant, match_id, {
        "id": match_id, "tenant": demand_tenant, "score": 0.82, "status": "active",
        "reasons": {"skills": ["SPS", "TIA Portal"], "distance_km": 18.5, "start": "2026-04-13"},
        "demand": {
            "id": str(uuid.uuid4()), "title": title,
            "description": "Zwei Instandhalter sollen S7-Steuerungen programmieren lernen.",
            "skills": ["SPS", "TIA Portal"], "participants": 2,
            "start_from": "2026-04-01", "start_to": "2026-06-30",
            "employer": {"name": "Müller Metallbau GmbH", "city": "Arnsberg", "employees": 35, "contact": None},
        },
        "offer": {"id": str(uuid.uuid4()), "tenant": offer_tenant, "provider_id": provider_id,
                  "external_id": "SPS-101", "title": "SPS-Techniker/in Siemens S7 (TIA Portal)"},
    })


def address_of(provider_id: str) -> str:
    return f"kurse-{provider_id[:8]}@technikum.example"


def delivery_id_of(event: Event, address: str | None = None) -> uuid.UUID:
    provider_id = event.data["offer"]["provider_id"]
    return domain.delivery_id_for(domain.match_key(event.data["id"], provider_id, address or address_of(provider_id)))


def mails_for(sink: SmtpSink, match_id: str) -> list[EmailMessage]:
    found = []
    for path in sorted(sink.directory.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if msg["X-Bildungsraum-Match"] == match_id:
            found.append(msg)
    return found


async def eventually(check: Callable, within: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def delivery(pool: asyncpg.Pool, tenant: str, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    async with tenant_transaction(pool, tenant) as conn:
        return await conn.fetchrow("SELECT * FROM deliveries WHERE id = $1", delivery_id)


async def attempt_log(pool: asyncpg.Pool, tenant: str, delivery_id: uuid.UUID) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, tenant) as conn:
        return await conn.fetch(
            "SELECT attempt, outcome, smtp_code, error FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
            delivery_id)


async def status_becomes(pool, tenant, delivery_id, status: str, within: float = 15.0) -> asyncpg.Record:
    async def check():
        row = await delivery(pool, tenant, delivery_id)
        return row if row is not None and row["status"] == status else None
    return await eventually(check, within, f"delivery {delivery_id} to become {status}")


async def new_provider(system, tenant: str = T_A) -> str:
    provider_id = str(uuid.uuid4())
    await handle(system.pool, system.handlers,
                 provider_event(tenant, provider_id, [address_of(provider_id)]))
    return provider_id


# ---- tests -------------------------------------------------------------------------------------

async def test_match_found_sends_exactly_one_mail(system):
    provider_id = await new_provider(system)
    event = match_event(provider_id)
    await handle(system.pool, system.handlers, event)

    mails = await eventually(lambda: mails_for(system.sink, event.data["id"]), what="the mail")
    row = await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")
    await asyncio.sleep(0.5)
    assert len(mails_for(system.sink, event.data["id"])) == 1
    mail = mails[0]
    address = address_of(provider_id)
    key = domain.match_key(event.data["id"], provider_id, address)
    assert mail["X-Envelope-To"] == address and mail["To"] == address
    assert mail["Subject"] == "Neuer passender Bedarf: SPS-Programmierung für Instandhalter"
    assert mail["Message-ID"] == domain.message_id_for(key, "bildungsraum.example") == row["message_id"]
    assert mail["X-Bildungsraum-Offer"] == event.data["offer"]["id"]
    assert mail["X-Bildungsraum-Delivery"] == str(row["id"])
    assert mail["List-Unsubscribe"].startswith("<http://notifications.test/v1/unsubscribe?token=")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    for part in (text, html):
        assert "SPS-Programmierung für Instandhalter" in part
        assert "Müller Metallbau GmbH, Arnsberg" in part and "Bildungsraum Hellweg-Hochsauerland" in part
        assert "Entfernung: 18,5 km" in part and "Beginn: 13.04.2026" in part
        assert f"http://portal.test/anbieter/bedarfe/{event.data['demand']['id']}" in part
        assert "http://portal.test/hellweg-hochsauerland/impressum" in part  # no imprint of its own: the portal's
        for raw in (event.data["demand"]["id"] + " ", event.data["offer"]["id"], "distance_km", "None"):
            assert raw not in part
    assert row["tenant_id"] == T_A and row["recipient"] == address and row["attempts"] == 1
    assert [r["outcome"] for r in await attempt_log(system.pool, T_A, row["id"])] == ["sent"]
    # DeliverySent is in the outbox, committed with the status.
    event_types = await system.pool.fetch(
        "SELECT event_type, tenant_id FROM outbox WHERE aggregate_key = $1", str(row["id"]))
    assert [(r["event_type"], r["tenant_id"]) for r in event_types] == [
        ("de.bildungsraum.notifications.delivery.sent.v1", T_A)]


async def test_replay_and_double_enqueue_still_send_one_mail(system):
    provider_id = await new_provider(system)
    event = match_event(provider_id)
    await handle(system.pool, system.handlers, event)
    # The same match announced again under a new event id (a replay from offset 0, a re-publish) ...
    replay = Event(event.type, event.source, event.tenant, event.key, event.data)
    await handle(system.pool, system.handlers, replay)
    await handle(system.pool, system.handlers, event)  # ... and the same event id (inbox drops it)
    # ... and the task enqueued twice more, besides the dispatcher's own.
    for _ in range(2):
        await asyncio.to_thread(system.enqueue, [(str(delivery_id_of(event)), T_A)])

    await eventually(lambda: mails_for(system.sink, event.data["id"]), what="the mail")
    await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")
    for _ in range(2):  # late duplicates still find it sent
        await asyncio.to_thread(system.enqueue, [(str(delivery_id_of(event)), T_A)])
    await asyncio.sleep(1.5)
    assert len(mails_for(system.sink, event.data["id"])) == 1
    async with tenant_transaction(system.pool, T_A) as conn:
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE match_id = $1",
                                   uuid.UUID(event.data["id"])) == 1


async def kill_mid_send(system, kill) -> Event:
    """A MatchFound whose mail is being sent (the sink holds DATA) when `kill` strikes; the sink
    drops the half-sent mail, so nothing has arrived yet."""
    event = match_event(await new_provider(system))
    system.sink.handler.accept_delay = 3.0
    try:
        await handle(system.pool, system.handlers, event)
        await eventually(lambda: system.sink.handler.in_progress == 1, what="the send to begin")
        kill()
        await eventually(lambda: system.sink.handler.in_progress == 0, 5, "the sink to drop the half-sent mail")
    finally:
        system.sink.handler.accept_delay = 0.0
    assert mails_for(system.sink, event.data["id"]) == []
    return event


def _kill_pool_processes(system) -> None:
    for pid in system.worker.pool_processes():  # the worker's main process lives on
        os.kill(pid, signal.SIGKILL)


async def test_pool_process_killed_mid_send_sends_once(system):
    event = await kill_mid_send(system, lambda: _kill_pool_processes(system))

    # task_reject_on_worker_lost: the task goes back to the queue at once, a new pool process sends it.
    await assert_sent_once_after_interruption(system, event, 15)


async def assert_sent_once_after_interruption(system, event, within: float) -> None:
    await eventually(lambda: mails_for(system.sink, event.data["id"]), within, "the mail after the kill")
    await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")
    await asyncio.sleep(1.0)  # time for a wrongly repeated send to arrive
    assert len(mails_for(system.sink, event.data["id"])) == 1
    outcomes = [r["outcome"] for r in await attempt_log(system.pool, T_A, delivery_id_of(event))]
    assert outcomes == ["interrupted", "sent"]


async def test_worker_killed_mid_send_and_replaced_sends_once(system):
    # the whole worker: nobody is left to hand the task back
    event = await kill_mid_send(system, system.worker.kill)

    # A new worker: Redis hands the unacknowledged task out again after the visibility timeout.
    system.worker.start()
    await assert_sent_once_after_interruption(system, event, 20)


async def test_worker_killed_in_the_middle_of_a_task_of_several_deliveries_sends_each_once(system):
    """The dispatcher sends due deliveries as tasks of several. Three become due in one commit (one
    task); the worker sends the first, and is killed while the server holds the second's DATA. The
    task comes back whole: the first is not sent again, the second goes once, the third once."""
    provider_id = await new_provider(system)
    events = [match_event(provider_id, title=f"SPS-Schulung Teil {n}") for n in (1, 2, 3)]

    def hold_the_next_data() -> None:  # the first mail is kept: the next DATA is held, not answered
        system.sink.handler.on_kept = None
        system.sink.handler.accept_delay = 3.0

    system.sink.handler.on_kept = hold_the_next_data
    try:
        async with system.pool.acquire() as conn, conn.transaction():  # due together: claimed together
            await set_tenant(conn, T_A)
            for event in events:
                await system.handlers[event.type](conn, event)
        await eventually(lambda: system.sink.handler.in_progress == 1, what="the second mail's DATA to be held")
        system.worker.kill()
        await eventually(lambda: system.sink.handler.in_progress == 0, 5, "the sink to drop the half-sent mail")
    finally:
        system.sink.handler.on_kept = None
        system.sink.handler.accept_delay = 0.0
    assert sum(len(mails_for(system.sink, e.data["id"])) for e in events) == 1

    system.worker.start()
    for event in events:
        await status_becomes(system.pool, T_A, delivery_id_of(event), "sent", 30)
    await asyncio.sleep(1.0)  # time for a wrongly repeated send to arrive
    assert [len(mails_for(system.sink, e.data["id"])) for e in events] == [1, 1, 1]
    logs = sorted([[r["outcome"] for r in await attempt_log(system.pool, T_A, delivery_id_of(e))] for e in events])
    assert logs == [["interrupted", "sent"], ["sent"], ["sent"]]


async def test_temporary_failure_retries_with_backoff_and_delivers_once(system):
    provider_id = await new_provider(system)
    event = match_event(provider_id)
    system.sink.stop()  # SMTP server down: connection refused
    try:
        await handle(system.pool, system.handlers, event)

        async def failed_twice():
            log = await attempt_log(system.pool, T_A, delivery_id_of(event))
            return len([r for r in log if r["outcome"] == "temporary_failure"]) >= 2
        await eventually(failed_twice, 15, "two temporary failures")
        row = await delivery(system.pool, T_A, delivery_id_of(event))
        assert row["status"] == "pending" and row["next_attempt_at"] > row["created_at"]
    finally:
        system.sink.start()

    await eventually(lambda: mails_for(system.sink, event.data["id"]), 20, "the mail after the sink is back")
    row = await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")
    await asyncio.sleep(1.0)
    assert len(mails_for(system.sink, event.data["id"])) == 1
    log = await attempt_log(system.pool, T_A, delivery_id_of(event))
    assert [r["outcome"] for r in log][-1] == "sent"
    assert {r["outcome"] for r in log[:-1]} == {"temporary_failure"} and len(log) >= 3
    assert all("Connection" in r["error"] for r in log[:-1])
    assert row["attempts"] == len(log)


class _Rejecting:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 Postfach unbekannt"


async def test_permanent_failure_is_recorded_and_reported(system):
    provider_id = await new_provider(system)
    event = match_event(provider_id)
    system.sink.stop()
    rejecting = Controller(_Rejecting(), hostname=system.settings.smtp_host, port=system.settings.smtp_port)
    rejecting.start()
    try:
        await handle(system.pool, system.handlers, event)
        row = await status_becomes(system.pool, T_A, delivery_id_of(event), "failed")
    finally:
        rejecting.stop()
        system.sink.start()
    log = await attempt_log(system.pool, T_A, delivery_id_of(event))
    assert [(r["outcome"], r["smtp_code"]) for r in log] == [("permanent_failure", 550)]
    assert "Postfach unbekannt" in row["last_error"]
    types = await system.pool.fetch("SELECT event_type FROM outbox WHERE aggregate_key = $1", str(row["id"]))
    assert [r["event_type"] for r in types] == ["de.bildungsraum.notifications.delivery.failed.v1"]


async def test_match_before_provider_is_sent_when_the_provider_arrives(system):
    provider_id = str(uuid.uuid4())
    event = match_event(provider_id)
    await handle(system.pool, system.handlers, event)
    await asyncio.sleep(1.0)
    assert mails_for(system.sink, event.data["id"]) == []

    await handle(system.pool, system.handlers, provider_event(T_A, provider_id, ["spaet@anbieter.example",
                                                                                 "Info@Anbieter.example"]))
    mails = await eventually(lambda: len(mails_for(system.sink, event.data["id"])) == 2 and
                             mails_for(system.sink, event.data["id"]), 10, "a mail to each address")
    assert sorted(m["To"] for m in mails) == ["info@anbieter.example", "spaet@anbieter.example"]
    # one Message-ID per recipient, each with its own unsubscribe link
    assert len({m["Message-ID"] for m in mails}) == 2 and len({m["List-Unsubscribe"] for m in mails}) == 2
    await status_becomes(system.pool, T_A, delivery_id_of(event, "spaet@anbieter.example"), "sent")


async def _open_handling(pool: asyncpg.Pool, handlers: dict, event: Event) -> tuple:
    """``handle``'s work for one event, its transaction left open: (connection, transaction)."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    await conn.execute("INSERT INTO inbox (consumer, event_id, event_type) VALUES ('notifications', $1, $2)",
                       event.id, event.type)
    await set_tenant(conn, event.tenant)
    await handlers[event.type](conn, event)
    return conn, tx


async def test_a_match_parked_while_its_provider_arrives_in_another_process_is_mailed(system):
    """Two notifications processes: one parks a match whose provider it does not know yet, the other
    applies the provider's registration at that moment. The registration must wait for the parked
    match (and then mail it), not miss it: before, it looked for parked matches while the park was
    not committed, and the match was never mailed."""
    provider_id = str(uuid.uuid4())
    event = match_event(provider_id)
    parking, parked = await _open_handling(system.pool, system.handlers, event)  # not committed yet
    try:
        arriving = asyncio.create_task(handle(system.pool, system.handlers,
                                              provider_event(T_A, provider_id, [address_of(provider_id)])))
        await asyncio.sleep(0.5)  # the arrival runs while the park is open
        await parked.commit()
    finally:
        await system.pool.release(parking)
    await arriving
    await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")
    assert len(mails_for(system.sink, event.data["id"])) == 1


async def test_a_match_retracted_while_its_provider_arrives_in_another_process_is_not_mailed(system):
    """The arrival makes the parked match's mail while, in another process, the match is retracted:
    the retraction must cancel that mail, not miss it (it looked for mails before the arrival's were
    committed, and a retracted match was mailed)."""
    provider_id = str(uuid.uuid4())
    # a demand of another network: the retraction's look in the demand's tenant comes too late to help
    found = match_event(provider_id, demand_tenant=T_B, offer_tenant=T_A)
    await handle(system.pool, system.handlers, found)  # parked: its provider is not known yet
    retracted = Event(MATCH_RETRACTED, "matching", found.tenant, found.key, found.data | {"status": "retracted"})
    arriving, arrived = await _open_handling(system.pool, system.handlers,
                                             provider_event(T_A, provider_id, [address_of(provider_id)]))
    try:
        retracting = asyncio.create_task(handle(system.pool, system.handlers, retracted))
        await asyncio.sleep(0.5)  # the retraction runs while the arrival's mail is not committed
        await arrived.commit()
    finally:
        await system.pool.release(arriving)
    await retracting
    row = await status_becomes(system.pool, T_A, delivery_id_of(found), "cancelled")
    await asyncio.sleep(1.0)  # time for a wrong mail to arrive
    assert row is not None and mails_for(system.sink, found.data["id"]) == []


async def test_older_provider_version_does_not_overwrite(system):
    provider_id = str(uuid.uuid4())
    await handle(system.pool, system.handlers, provider_event(
        T_A, provider_id, ["neu@anbieter.example"], "Neuer Name", version=3, event_type=PROVIDER_UPDATED))
    await handle(system.pool, system.handlers, provider_event(T_A, provider_id, ["alt@anbieter.example"], "Alt", 2))
    async with tenant_transaction(system.pool, T_A) as conn:
        row = await conn.fetchrow("SELECT name, emails, version FROM providers WHERE id = $1", uuid.UUID(provider_id))
    assert (row["name"], row["emails"], row["version"]) == ("Neuer Name", ["neu@anbieter.example"], 3)


async def test_delivery_log_is_tenant_scoped(system):
    provider_id = await new_provider(system, T_A)
    event = match_event(provider_id, demand_tenant=T_B, offer_tenant=T_A)  # demand in B, provider in A
    await handle(system.pool, system.handlers, event)
    await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")

    # Row-level security: the delivery belongs to the provider's tenant; another tenant's transaction,
    # and one with no tenant at all, see none of its rows, even unfiltered.
    async with tenant_transaction(system.pool, T_B) as conn:
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 0
        assert await conn.fetchval("SELECT count(*) FROM delivery_attempts") == 0
        assert await conn.fetchval("SELECT count(*) FROM providers") == 0
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE id = $1", delivery_id_of(event)) == 0
    async with system_transaction(system.pool) as conn:
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 0
    async with tenant_transaction(system.pool, T_A) as conn:
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE id = $1", delivery_id_of(event)) == 1
        # and cannot write rows into another tenant
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE deliveries SET tenant_id = $1 WHERE id = $2", T_B, delivery_id_of(event))

    async with _api(system) as (client, act_as):
        act_as(T_A, "network_admin")
        body = (await client.get("/v1/deliveries")).json()
        mine = [d for d in body["items"] if d["id"] == str(delivery_id_of(event))]
        assert len(mine) == 1 and mine[0]["status"] == "sent" and mine[0]["tenant"] == T_A
        assert [a["outcome"] for a in mine[0]["attempt_log"]] == ["sent"]
        created = [d["created_at"] for d in body["items"]]
        assert created == sorted(created, reverse=True)

        act_as(T_B, "network_admin")
        assert (await client.get("/v1/deliveries")).json()["items"] == []
        act_as(None, "operator")
        response = await client.get("/v1/deliveries", headers={"X-Tenant": T_B})
        assert response.status_code == 200 and response.json()["items"] == []
        assert len((await client.get("/v1/deliveries", headers={"X-Tenant": T_A})).json()["items"]) >= 1
        act_as(T_A, "employer")
        response = await client.get("/v1/deliveries")
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_unsubscribe_get_changes_nothing_post_does_forged_does_nothing(system):
    provider_id = await new_provider(system)
    address = address_of(provider_id)
    first = match_event(provider_id)
    await handle(system.pool, system.handlers, first)
    mail = (await eventually(lambda: mails_for(system.sink, first.data["id"]), what="the first mail"))[0]
    link = mail["List-Unsubscribe"].strip("<>")
    path = link.removeprefix("http://notifications.test")
    token = path.split("token=", 1)[1]

    async with _api(system) as (client, act_as):
        # A mail scanner following the link: a German page with a button, and nothing changes.
        page = await client.get(path)  # nobody logged in
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "abbestellen" in page.text and 'method="post"' in page.text and address in page.text
        second = match_event(provider_id)
        await handle(system.pool, system.handlers, second)
        await eventually(lambda: mails_for(system.sink, second.data["id"]), what="a mail after the GET")

        # Forged or altered links: a page saying so, and nothing changes.
        altered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        from services.notifications import unsubscribe
        other_secret = unsubscribe.sign("x" * 48, unsubscribe.Recipient(T_A, "provider", provider_id, address))
        for bad in (altered, other_secret, "x" * 32):
            for method in (client.get, client.post):
                response = await method("/v1/unsubscribe", params={"token": bad})
                assert response.status_code == 404 and "ungültig" in response.text
        third = match_event(provider_id)
        await handle(system.pool, system.handlers, third)
        await eventually(lambda: mails_for(system.sink, third.data["id"]), what="a mail after forged links")

        # One-click POST (RFC 8058): unsubscribed; and whatever comes later sends nothing.
        response = await client.post(path, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200 and "abbestellt" in response.text
        assert (await client.post(path)).status_code == 200  # again: the same, idempotent
        act_as(T_A, "network_admin")
        pref = (await client.get(f"/v1/preferences/{provider_id}")).json()
        assert pref["addresses"] == [{"address": address, "mode": "off", "digest_hour": 7, "digest_weekday": 1}]
        later = [match_event(provider_id) for _ in range(2)]
        for event in later:
            await handle(system.pool, system.handlers, event)
        for event in later:
            await status_becomes(system.pool, T_A, delivery_id_of(event), "suppressed")
            assert mails_for(system.sink, event.data["id"]) == []

        act_as(T_B, "network_admin")  # another network does not see this provider
        assert (await client.get(f"/v1/preferences/{provider_id}")).status_code == 404

        act_as(T_A, "network_admin")  # opting in again
        response = await client.put(f"/v1/preferences/{provider_id}", json={
            "mode": "instant", "addresses": [{"address": address, "mode": "instant"}]})
        assert response.status_code == 200 and response.json()["addresses"][0]["mode"] == "instant"
        invalid = await client.put(f"/v1/preferences/{provider_id}", json={"mode": "hourly"})
        assert invalid.status_code == 422 and invalid.json()["errors"]
        stranger = await client.put(f"/v1/preferences/{provider_id}", json={
            "mode": "instant", "addresses": [{"address": "fremd@example.org", "mode": "off"}]})
        assert stranger.status_code == 422
        again = match_event(provider_id)
        await handle(system.pool, system.handlers, again)
        await eventually(lambda: mails_for(system.sink, again.data["id"]), what="the mail after opting in again")


async def test_provider_users_see_and_change_only_their_own_providers(system):
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    for provider_id, members in ((mine, ["sub-alice"]), (theirs, ["sub-bob"])):
        event = provider_event(T_A, provider_id, [address_of(provider_id)])
        event.data["members"] = members
        await handle(system.pool, system.handlers, event)
    events = {p: match_event(p) for p in (mine, theirs)}
    for event in events.values():
        await handle(system.pool, system.handlers, event)
    for event in events.values():
        await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")

    async with _api(system) as (client, act_as):
        act_as(T_A, "provider", subject="sub-alice")  # a member of `mine` by catalog's members list
        log = (await client.get("/v1/deliveries", params={"page_size": 200})).json()["items"]
        assert {d["provider_id"] for d in log} == {mine}
        assert (await client.get("/v1/deliveries", params={"provider_id": theirs})).status_code == 404
        assert (await client.get(f"/v1/preferences/{mine}")).status_code == 200
        assert (await client.get(f"/v1/preferences/{theirs}")).status_code == 404
        response = await client.put(f"/v1/preferences/{theirs}", json={"mode": "off"})
        assert response.status_code == 404
        act_as(T_A, "provider", subject="sub-carol", providers=[theirs])  # granted by the token's claim
        log = (await client.get("/v1/deliveries", params={"page_size": 200})).json()["items"]
        assert {d["provider_id"] for d in log} == {theirs}
        assert (await client.put(f"/v1/preferences/{theirs}", json={"mode": "daily", "digest_hour": 8})).json()[
            "mode"] == "daily"
        act_as(T_A, "provider", subject="sub-nobody")  # a provider user of no provider sees nothing
        assert (await client.get("/v1/deliveries")).json()["items"] == []
        act_as(T_A, "network_admin")
        log = (await client.get("/v1/deliveries", params={"page_size": 200})).json()["items"]
        assert {mine, theirs} <= {d["provider_id"] for d in log}
        await client.put(f"/v1/preferences/{theirs}", json={"mode": "instant"})

    # Row-level security holds it too: a query that forgets the filter still sees only `mine`.
    async with tenant_transaction(system.pool, T_A) as conn:
        await store.act_for_providers(conn, {uuid.UUID(mine)})
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE provider_id = $1", uuid.UUID(theirs)) == 0
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE provider_id = $1", uuid.UUID(mine)) == 1
        assert await conn.fetchval("SELECT count(*) FROM preferences WHERE provider_id = $1", uuid.UUID(theirs)) == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM delivery_attempts WHERE delivery_id = $1", delivery_id_of(events[theirs])) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO preferences (provider_id, tenant_id, mode) VALUES ($1, $2, 'off')",
                               uuid.UUID(theirs), T_A)


class _api:
    """The HTTP app on the test database, tokens replaced by a chosen principal."""

    def __init__(self, system) -> None:
        runtime = ServiceRuntime(system.settings, MIGRATIONS)
        runtime.pool = system.pool
        self.app = create_http_app(runtime, "notifications (test)", [api.router])
        self.app.state.runtime = runtime
        self.principal: Principal | None = None
        self.app.dependency_overrides[get_principal] = lambda: self.principal

    def act_as(self, tenant: str | None, role: str, subject: str | None = None,
               providers: list[str] | None = None, claims: dict | None = None) -> None:
        claims = {**(claims or {}), **({"providers": providers} if providers else {})}
        self.principal = Principal(subject=subject or f"{role}-{tenant}", username=f"{tenant}-{role}", email=None,
                                   roles=frozenset({role}), tenant=tenant, claims=claims)

    async def __aenter__(self):
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://notifications.test")
        return self.client, self.act_as

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()


# ---- the window after the SMTP server accepted and before the delivery committed ---------------

class _Blocked:
    """An admin transaction holding a lock that the worker's next write waits for."""

    def __init__(self, settings: NotificationsSettings, statement: str, *args) -> None:
        self.settings, self.statement, self.args = settings, statement, args

    async def __aenter__(self) -> _Blocked:
        self.conn = await asyncpg.connect(self.settings.postgres_admin_url, database=self.settings.database_name)
        self.tx = self.conn.transaction()
        await self.tx.start()
        await self.conn.execute(self.statement, *self.args)
        return self

    async def waiting(self) -> bool:
        """A worker's statement is waiting for this lock."""
        await self.conn.execute("SELECT pg_stat_clear_snapshot()")  # not the view as of this transaction's start
        return bool(await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"))

    async def __aexit__(self, *exc) -> None:
        await self.tx.rollback()
        await self.conn.close()


async def test_worker_killed_after_smtp_accepted_before_commit_sends_once(system):
    """The window that matters: the server has the mail, the worker dies before its commit. The
    worker commits "accepted" on its own at once; the delivery's commit is held (the outbox is
    locked) until the whole worker is SIGKILLed. The next worker finishes it without resending."""
    event = match_event(await new_provider(system))
    async with _Blocked(system.settings, "LOCK TABLE outbox IN SHARE MODE") as blocked:
        await handle(system.pool, system.handlers, event)
        await eventually(lambda: mails_for(system.sink, event.data["id"]), what="the server to accept the mail")

        async def accepted_and_stuck():
            log = await attempt_log(system.pool, T_A, delivery_id_of(event))
            return [r["outcome"] for r in log] == ["accepted"] and await blocked.waiting()
        await eventually(accepted_and_stuck, what="the worker to wait before its commit")
        system.worker.kill()
    row = await delivery(system.pool, T_A, delivery_id_of(event))
    assert row["status"] == "pending"  # the delivery's own commit never happened

    system.worker.start()
    row = await status_becomes(system.pool, T_A, delivery_id_of(event), "sent", 30)
    await asyncio.sleep(1.0)  # time for a wrongly repeated send to arrive
    assert len(mails_for(system.sink, event.data["id"])) == 1
    assert [r["outcome"] for r in await attempt_log(system.pool, T_A, row["id"])] == ["sent"]


async def test_killed_between_smtp_250_and_the_accepted_commit_the_copy_has_the_same_message_id(system):
    """What is left of the window: the instant between the server's 250 and the worker's COMMIT of
    "accepted". Hit here by the server itself, which SIGKILLs the worker once it has kept the mail
    and before its 250 goes out: the next worker sends again, and the receiver gets a copy with the
    same Message-ID (README)."""
    event = match_event(await new_provider(system))
    system.sink.handler.on_kept = system.worker.kill
    try:
        await handle(system.pool, system.handlers, event)
        await eventually(lambda: mails_for(system.sink, event.data["id"]), what="the server to keep the mail")
        await eventually(lambda: system.worker.process.poll() is not None, what="the worker to be killed")
    finally:
        system.sink.handler.on_kept = None
    row = await delivery(system.pool, T_A, delivery_id_of(event))
    assert row["status"] == "pending"
    assert [r["outcome"] for r in await attempt_log(system.pool, T_A, row["id"])] == ["started"]  # not accepted
    system.worker.start()
    await status_becomes(system.pool, T_A, delivery_id_of(event), "sent", 30)
    mails = mails_for(system.sink, event.data["id"])
    assert len(mails) == 2 and mails[0]["Message-ID"] == mails[1]["Message-ID"]
    outcomes = [r["outcome"] for r in await attempt_log(system.pool, T_A, delivery_id_of(event))]
    assert outcomes == ["interrupted", "sent"]


def _drop_open_transactions(settings: NotificationsSettings) -> None:
    """PostgreSQL gone for the worker: the worker's session that holds "accepted" uncommitted, waiting
    for the server's 250, is terminated (no other: the dispatcher of this process goes on). From the
    SMTP server's thread, so on a thread of its own with its own event loop."""
    async def terminate() -> int:
        conn = await asyncpg.connect(settings.postgres_admin_url, database=settings.database_name)
        try:
            return await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction' AND query LIKE '%SET outcome = ''accepted''%'")
        finally:
            await conn.close()

    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(asyncio.run(terminate())))
    thread.start()
    thread.join(10)
    assert done and done[0] >= 1, "no worker transaction was open while the server kept the mail"


async def test_postgres_gone_between_smtp_250_and_the_accepted_commit_sends_once(system):
    """The server has kept the mail, and PostgreSQL goes away before the worker commits "accepted"
    (its sessions are terminated once the mail is kept, before the 250 goes out). The task's retry
    must not send it again: the worker noted the acceptance in Redis, and the retry records the
    delivery as sent. Before, the retry found only a started attempt and sent the mail a second time."""
    event = match_event(await new_provider(system))
    system.sink.handler.on_kept = lambda: _drop_open_transactions(system.settings)
    try:
        await handle(system.pool, system.handlers, event)
        row = await status_becomes(system.pool, T_A, delivery_id_of(event), "sent", 30)
    finally:
        system.sink.handler.on_kept = None
    await asyncio.sleep(1.0)  # time for a wrongly repeated send to arrive
    assert len(mails_for(system.sink, event.data["id"])) == 1
    assert [r["outcome"] for r in await attempt_log(system.pool, T_A, row["id"])] == ["sent"]


# ---- SMTP answers ------------------------------------------------------------------------------

class _GreylistOnce:
    """451 to the first DATA of each message, then the sink's own answer."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink, self.seen = sink, set()

    async def handle_DATA(self, server, session, envelope):
        key = bytes(envelope.original_content or b"").split(b"Message-ID:", 1)[-1][:200]
        if key not in self.seen:
            self.seen.add(key)
            return "451 4.7.1 Bitte später erneut versuchen"
        return await self.sink.handler.handle_DATA(server, session, envelope)


async def test_451_then_success_sends_one_mail_after_a_backoff(system):
    event = match_event(await new_provider(system))
    system.sink.stop()
    greylisting = Controller(_GreylistOnce(system.sink), hostname=system.settings.smtp_host,
                             port=system.settings.smtp_port)
    greylisting.start()
    try:
        await handle(system.pool, system.handlers, event)
        row = await status_becomes(system.pool, T_A, delivery_id_of(event), "sent", 20)
    finally:
        greylisting.stop()
        system.sink.start()
    await asyncio.sleep(1.0)
    assert len(mails_for(system.sink, event.data["id"])) == 1
    async with tenant_transaction(system.pool, T_A) as conn:
        log = await conn.fetch("SELECT outcome, smtp_code, at, finished_at FROM delivery_attempts"
                               " WHERE delivery_id = $1 ORDER BY attempt", row["id"])
    assert [(r["outcome"], r["smtp_code"]) for r in log] == [("temporary_failure", 451), ("sent", None)]
    assert (log[1]["at"] - log[0]["finished_at"]).total_seconds() >= system.settings.retry_base_seconds / 2


# ---- retracted, closed, digests ----------------------------------------------------------------

async def test_retracted_match_or_closed_demand_before_sending_sends_nothing(system):
    from contracts import DEMAND_CLOSED, MATCH_RETRACTED
    provider_id = await new_provider(system)
    async with _api(system) as (client, act_as):  # gather in a digest, so nothing goes out at once
        act_as(T_A, "network_admin")
        assert (await client.put(f"/v1/preferences/{provider_id}", json={"mode": "daily", "digest_hour": 0})
                ).status_code == 200
    retracted, closed, kept = (match_event(provider_id, title=t) for t in (
        "Zurückgezogen: Hydraulik", "Geschlossen: Pneumatik", "Bleibt: SPS-Programmierung"))
    for event in (retracted, closed, kept):
        await handle(system.pool, system.handlers, event)
    for event in (retracted, closed, kept):
        await status_becomes(system.pool, T_A, delivery_id_of(event), "digested")
    await handle(system.pool, system.handlers, Event(MATCH_RETRACTED, "matching", T_A, retracted.key,
                                                     {**retracted.data, "status": "retracted"}))
    demand = closed.data["demand"]
    await handle(system.pool, system.handlers, Event(DEMAND_CLOSED, "matching", T_A, demand["id"], {
        "id": demand["id"], "tenant": T_A, "title": demand["title"], "description": demand["description"],
        "skills": demand["skills"], "participants": 2, "start_from": "2026-04-01", "start_to": "2026-06-30",
        "formats": ["presence"], "max_distance_km": 50, "funding_required": False, "status": "closed",
        "employer": {"name": "Müller Metallbau GmbH", "lat": 51.4, "lon": 8.06}}))

    from datetime import UTC, datetime

    from services.notifications.digests import collect_digests
    assert await collect_digests(system.settings, system.pool, datetime.now(UTC)) == 1
    assert await collect_digests(system.settings, system.pool, datetime.now(UTC)) == 0  # a second beat
    mails = await eventually(lambda: mails_for_recipient(system.sink, address_of(provider_id)), what="the digest")
    await asyncio.sleep(1.0)
    mails = mails_for_recipient(system.sink, address_of(provider_id))
    assert len(mails) == 1
    text = mails[0].get_body(("plain",)).get_content()
    assert mails[0]["Subject"] == "Zusammenfassung: ein neuer passender Bedarf"
    assert "Bleibt: SPS-Programmierung" in text and "Am " in text and "einen neuen passenden Bedarf" in text
    assert "Zurückgezogen" not in text and "Geschlossen" not in text
    async with tenant_transaction(system.pool, T_A) as conn:
        statuses = {r["match_id"]: r["status"] for r in await conn.fetch(
            "SELECT match_id, status FROM deliveries WHERE provider_id = $1 AND kind = 'match_found'",
            uuid.UUID(provider_id))}
    assert statuses[uuid.UUID(retracted.data["id"])] == statuses[uuid.UUID(closed.data["id"])] == "cancelled"


async def test_a_match_retracted_before_its_mail_and_restored_is_mailed_once(system):
    """matching says MatchRestored when a retracted match holds again (services/matching/handlers._add):
    the delivery the retraction cancelled before it went out is pending again and goes, once; the same
    again, as a redelivery would bring it, changes nothing."""
    from contracts import MATCH_RESTORED, MATCH_RETRACTED
    provider_id = await new_provider(system)
    async with _api(system) as (client, act_as):  # gathered for a digest: nothing goes out before the retraction
        act_as(T_A, "network_admin")
        assert (await client.put(f"/v1/preferences/{provider_id}", json={"mode": "daily", "digest_hour": 0})
                ).status_code == 200
    found = match_event(provider_id, title="Zurück: Gabelstapler-Führerschein")
    await handle(system.pool, system.handlers, found)
    await status_becomes(system.pool, T_A, delivery_id_of(found), "digested")
    await handle(system.pool, system.handlers, Event(MATCH_RETRACTED, "matching", T_A, found.key,
                                                     {**found.data, "status": "retracted"}))
    await status_becomes(system.pool, T_A, delivery_id_of(found), "cancelled")
    await handle(system.pool, system.handlers, Event(MATCH_RESTORED, "matching", T_A, found.key, found.data))
    await status_becomes(system.pool, T_A, delivery_id_of(found), "digested")
    await handle(system.pool, system.handlers, Event(MATCH_RESTORED, "matching", T_A, found.key, found.data))

    from datetime import UTC, datetime

    from services.notifications.digests import collect_digests
    assert await collect_digests(system.settings, system.pool, datetime.now(UTC)) == 1
    mails = await eventually(lambda: mails_for_recipient(system.sink, address_of(provider_id)), what="the digest")
    await asyncio.sleep(1.0)
    mails = mails_for_recipient(system.sink, address_of(provider_id))
    assert len(mails) == 1
    assert "Zurück: Gabelstapler-Führerschein" in mails[0].get_body(("plain",)).get_content()


async def test_a_restored_match_is_not_news_to_addresses_chosen_after_it_was_announced(system):
    """The provider was mailed about the match; then it was retracted, the provider added an address,
    the employer chose alerts; then the match held again. Nobody hears of it again: not the first
    address (mailed), not the new one, not the employer (an old match, not a new offer)."""
    from contracts import MATCH_RESTORED, MATCH_RETRACTED
    provider_id = await new_provider(system)
    firm = f"{T_A}-firma-{uuid.uuid4().hex[:6]}"
    found = match_event(provider_id, title="Wieder da: Schweißen MAG")
    found.data["demand"]["owner"] = firm
    await handle(system.pool, system.handlers, found)
    await status_becomes(system.pool, T_A, delivery_id_of(found), "sent")
    await handle(system.pool, system.handlers, Event(MATCH_RETRACTED, "matching", T_A, found.key,
                                                     {**found.data, "status": "retracted"}))
    added = f"leitung-{provider_id[:8]}@technikum.example"
    await handle(system.pool, system.handlers, provider_event(
        T_A, provider_id, [address_of(provider_id), added], version=2, event_type=PROVIDER_UPDATED))
    async with _api(system) as (client, act_as):
        act_as(T_A, "employer", subject="sub-employer", claims={"firm": firm})
        assert (await client.put("/v1/employer-alerts", json={"address": "spaeter@metallbau.example",
                                                              "mode": "instant"})).status_code == 200
    await handle(system.pool, system.handlers, Event(MATCH_RESTORED, "matching", T_A, found.key, found.data))

    await asyncio.sleep(2.0)  # time for the dispatcher and worker to send a wrong mail
    assert len(mails_for_recipient(system.sink, address_of(provider_id))) == 1
    assert mails_for_recipient(system.sink, added) == []
    assert mails_for_recipient(system.sink, "spaeter@metallbau.example") == []
    async with tenant_transaction(system.pool, T_A) as conn:
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE match_id = $1",
                                   uuid.UUID(found.data["id"])) == 1


async def test_a_restored_match_its_provider_never_heard_of_is_announced(system):
    """Retracted while its provider was not yet known, then held again: the provider, once known, is
    told, once."""
    from contracts import MATCH_RESTORED, MATCH_RETRACTED
    provider_id = str(uuid.uuid4())
    found = match_event(provider_id, title="Nie gehört: Hydraulik")
    await handle(system.pool, system.handlers, found)
    await handle(system.pool, system.handlers, Event(MATCH_RETRACTED, "matching", T_A, found.key,
                                                     {**found.data, "status": "retracted"}))
    await handle(system.pool, system.handlers, Event(MATCH_RESTORED, "matching", T_A, found.key, found.data))
    await handle(system.pool, system.handlers, provider_event(T_A, provider_id, [address_of(provider_id)]))
    await eventually(lambda: mails_for(system.sink, found.data["id"]), what="the mail")
    await asyncio.sleep(1.0)
    assert len(mails_for(system.sink, found.data["id"])) == 1


def mails_for_recipient(sink: SmtpSink, address: str) -> list[EmailMessage]:
    found = []
    for path in sorted(sink.directory.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if msg["X-Envelope-To"] == address:
            found.append(msg)
    return found


async def test_daily_digest_gathers_the_days_matches_in_one_mail_and_off_sends_nothing(system):
    from datetime import UTC, datetime

    from services.notifications.digests import collect_digests
    daily, silent = await new_provider(system), await new_provider(system)
    async with _api(system) as (client, act_as):
        act_as(T_A, "network_admin")
        await client.put(f"/v1/preferences/{daily}", json={"mode": "daily", "digest_hour": 0})
        await client.put(f"/v1/preferences/{silent}", json={"mode": "off"})
    titles = ["Schweißen WIG für Monteure", "Excel für die Buchhaltung", "Staplerschein für Lagerhelfer"]
    events = [match_event(daily, title=t) for t in titles] + [match_event(silent)]
    for event in events:
        await handle(system.pool, system.handlers, event)
    for event in events[:3]:
        await status_becomes(system.pool, T_A, delivery_id_of(event), "digested")
    await status_becomes(system.pool, T_A, delivery_id_of(events[3]), "suppressed")
    await asyncio.sleep(1.0)
    assert mails_for_recipient(system.sink, address_of(daily)) == []  # nothing at once

    # Two beats at the same time make one digest.
    now = datetime.now(UTC)
    made = await asyncio.gather(*(collect_digests(system.settings, system.pool, now) for _ in range(2)))
    assert sorted(made) == [0, 1]
    mail = (await eventually(lambda: mails_for_recipient(system.sink, address_of(daily)), what="the digest"))[0]
    await asyncio.sleep(1.0)
    assert len(mails_for_recipient(system.sink, address_of(daily))) == 1
    assert mail["Subject"] == "Zusammenfassung: 3 neue passende Bedarfe"
    text = mail.get_body(("plain",)).get_content()
    for title in titles:
        assert title in text
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mails_for_recipient(system.sink, address_of(silent)) == []


# ---- the matches topic replayed from offset 0, through the real broker ---------------------------

async def test_matches_topic_replayed_from_offset_zero_sends_no_second_mail(system):
    """MatchFound and the provider go through a real broker into the real consumer; then the group
    is rewound to offset 0 and consumed again by a consumer whose inbox has forgotten everything
    (as after a restore): the delivery's idempotency key alone must hold. The count is taken only
    after the group's committed offset has passed the match's event."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from contracts import MATCHES_TOPIC, PROVIDERS_TOPIC
    from runtime.inbox import EventConsumer
    from runtime.kafka import create_consumer, create_producer
    from tests.integration.test_outbox_inbox import Broker

    broker = Broker()
    broker.start()
    settings = system.settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    group = f"notifications-replay-{uuid.uuid4().hex[:6]}"

    def consumer(inbox_name: str) -> EventConsumer:
        return EventConsumer(
            name=inbox_name, pool=system.pool, handlers=system.handlers,
            consumer_factory=lambda: create_consumer(settings, group, [MATCHES_TOPIC, PROVIDERS_TOPIC]),
            producer_factory=lambda: create_producer(settings))

    async def run_until_committed_past(inbox_name: str, tp: TopicPartition, offset: int) -> None:
        running = consumer(inbox_name)
        task = asyncio.create_task(running.run())
        probe = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
        try:
            await eventually(lambda: (probe.committed(tp) or -1) > offset, 60, "the committed offset to pass the match")
        finally:
            probe.close()
            running.stop()
            await asyncio.wait_for(task, 30)

    try:
        provider_id = str(uuid.uuid4())
        event = match_event(provider_id)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for topic, e in ((PROVIDERS_TOPIC, provider_event(T_A, provider_id, [address_of(provider_id)])),
                         (MATCHES_TOPIC, event)):
            metadata = producer.send(topic, key=e.key.encode(), value=e.value(), headers=e.headers()).get(10)
        producer.close()
        tp = TopicPartition(MATCHES_TOPIC, metadata.partition)

        await run_until_committed_past("notifications", tp, metadata.offset)
        await eventually(lambda: mails_for(system.sink, event.data["id"]), what="the first mail")
        await status_becomes(system.pool, T_A, delivery_id_of(event), "sent")

        rewind = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
        partitions = [TopicPartition(t, p) for t in (MATCHES_TOPIC, PROVIDERS_TOPIC)
                      for p in rewind.partitions_for_topic(t)]
        rewind.commit({p: OffsetAndMetadata(0, "", -1) for p in partitions})
        assert rewind.committed(tp) == 0
        rewind.close()

        await run_until_committed_past("notifications-restored", tp, metadata.offset)
        # the handler did run again ...
        assert await system.pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'notifications-restored'") >= 2
        await asyncio.sleep(2.0)  # time for the dispatcher and worker to send a wrong second mail
        assert len(mails_for(system.sink, event.data["id"])) == 1  # ... and sent nothing again
    finally:
        broker.stop()


async def test_employer_opted_in_hears_of_good_new_offers_for_its_demand(system):
    firm = f"{T_A}-firma-{uuid.uuid4().hex[:6]}"
    async with _api(system) as (client, act_as):
        act_as(T_A, "employer", subject="sub-employer", claims={"firm": firm})
        good = await client.put("/v1/employer-alerts", json={"address": "personal@metallbau.example",
                                                             "mode": "instant", "min_score": 0.5})
        assert good.status_code == 200
        picky = await client.put("/v1/employer-alerts", json={"address": "chef@metallbau.example",
                                                              "mode": "instant", "min_score": 0.9})
        assert picky.status_code == 200
        assert {a["address"] for a in (await client.get("/v1/employer-alerts")).json()["items"]} == {
            "personal@metallbau.example", "chef@metallbau.example"}
        assert (await client.put("/v1/employer-alerts", json={"address": "kein-mail", "mode": "instant"})
                ).status_code == 422

    event = match_event(await new_provider(system))  # score 0.82
    event.data["demand"]["owner"] = firm
    await handle(system.pool, system.handlers, event)
    mails = await eventually(lambda: mails_for_recipient(system.sink, "personal@metallbau.example"),
                             what="the employer's alert")
    assert mails[0]["Subject"] == "Neues passendes Angebot für Ihren Bedarf: SPS-Programmierung für Instandhalter"
    text = mails[0].get_body(("plain",)).get_content()
    assert "SPS-Techniker/in Siemens S7 (TIA Portal)" in text and "82 %" in text
    assert f"http://portal.test/arbeitgeber/bedarfe/{event.data['demand']['id']}" in text
    await eventually(lambda: len(mails_for(system.sink, event.data["id"])) == 2, what="the provider's mail too")
    await asyncio.sleep(1.0)
    assert mails_for_recipient(system.sink, "chef@metallbau.example") == []  # below its threshold
