"""The outbox relay and the idempotent inbox, against a broker and a database of their own:
events written while the broker is down are published once it is up, in order per aggregate;
a redelivered event has its effect once; a failing one is retried, then dead-lettered; an outage
of what the handler stands on is waited out, never dead-lettered."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
from kafka import KafkaConsumer, KafkaProducer

from contracts import TENANT_CREATED, TENANTS_TOPIC
from deploy.local.stack import port_open, tansu_binary, wait_for
from runtime.db import create_pool, migrate
from runtime.events import Event
from runtime.inbox import EventConsumer
from runtime.kafka import create_consumer, create_producer, dead_letter_topic, ensure_topics
from runtime.outbox import OutboxRelay, add_to_outbox
from runtime.settings import ServiceSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url,
                                         "--advertised-listener-url", url],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("broker", lambda: port_open("127.0.0.1", self.port), process=self.process)
        ensure_topics(self.bootstrap, partitions=2)

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def broker():
    broker = Broker()
    yield broker
    broker.stop()


@pytest.fixture
async def settings(broker: Broker, tmp_path: Path):
    settings = ServiceSettings(service=f"rt{uuid.uuid4().hex[:8]}", database_prefix="bildungsraum_test",
                               kafka_bootstrap=broker.bootstrap, outbox_sweep_seconds=0.5)
    (tmp_path / "0001_effects.sql").write_text(
        "CREATE TABLE effects (event_id text NOT NULL, tenant text NOT NULL);")
    await migrate(settings, tmp_path)
    yield settings
    conn = await asyncpg.connect(settings.postgres_admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{settings.database_name}" WITH (FORCE)')
    for role in (settings.app_role, settings.owner_role):
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    await conn.close()


def _tenant_event(n: int, key: str) -> Event:
    return Event(TENANT_CREATED, "test", f"t-{n}", key, {"id": f"t-{n}", "name": f"#{n}", "status": "active"})


def _read_all(bootstrap: str, topic: str, expected: int, timeout_ms: int = 20_000) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=None, consumer_timeout_ms=timeout_ms)
    records = []
    for record in consumer:
        records.append(record)
        if len(records) >= expected:
            break
    consumer.close()
    return records


async def test_events_written_while_the_broker_is_down_are_published_in_order(broker, settings) -> None:
    pool = await create_pool(settings)
    async with pool.acquire() as conn, conn.transaction():
        for n in range(20):
            await add_to_outbox(conn, TENANTS_TOPIC, _tenant_event(n, "ab"[n % 2]))
    async with pool.acquire() as conn, conn.transaction():  # sent two days ago: past the retention
        await add_to_outbox(conn, TENANTS_TOPIC, _tenant_event(99, "old"))
        await conn.execute("UPDATE outbox SET sent_at = now() - interval '2 days' WHERE aggregate_key = 'old'")
    relay = OutboxRelay(settings.database_url, lambda: create_producer(settings), sweep_seconds=0.3,
                        retention_hours=24)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(1.5)  # the relay tries, fails, keeps the rows
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 20
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE aggregate_key = 'old'") == 0  # purged

    await asyncio.to_thread(broker.start)
    for _ in range(200):
        if not await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
            break
        await asyncio.sleep(0.1)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0

    # Rows written now are published promptly: NOTIFY wakes the relay.
    async with pool.acquire() as conn, conn.transaction():
        await add_to_outbox(conn, TENANTS_TOPIC, _tenant_event(20, "a"))
    records = await asyncio.to_thread(_read_all, broker.bootstrap, TENANTS_TOPIC, 21)
    relay.stop()
    await asyncio.wait_for(task, 10)
    await pool.close()

    by_key: dict[str, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(r.key.decode(), []).append(int(dict(r.headers)["ce_tenant"].decode()[2:]))
    assert by_key == {"a": [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20], "b": [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]}
    headers = dict(records[0].headers)
    assert headers["ce_type"] == TENANT_CREATED.encode() and headers["traceparent"].startswith(b"00-")


async def test_inbox_has_each_effect_once_retries_and_dead_letters(broker, settings) -> None:
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    calls: dict[str, int] = {}

    async def handler(conn: asyncpg.Connection, event: Event) -> None:
        calls[event.data["id"]] = calls.get(event.data["id"], 0) + 1
        await conn.execute("INSERT INTO effects (event_id, tenant) VALUES ($1, $2)", event.id, event.data["id"])
        if event.data["id"] == "flaky" and calls["flaky"] < 3:
            raise RuntimeError("a bug that goes away")
        if event.data["id"] == "outage" and calls["outage"] < 8:
            raise ConnectionRefusedError("database unreachable")  # longer than max_attempts: still no DLQ
        if event.data["id"] == "doomed":
            raise ValueError("this one never works")

    once = _tenant_event(1, "k")
    flaky = Event(TENANT_CREATED, "test", "flaky", "k", {"id": "flaky", "name": "f", "status": "active"})
    doomed = Event(TENANT_CREATED, "test", "doomed", "k", {"id": "doomed", "name": "d", "status": "active"})
    outage = Event(TENANT_CREATED, "test", "outage", "k", {"id": "outage", "name": "o", "status": "active"})
    after = _tenant_event(2, "k")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for event in (once, once, flaky, doomed, outage, once, after):  # `once` redelivered twice
        producer.send(TENANTS_TOPIC, key=b"k", value=event.value(), headers=event.headers()).get(10)
    producer.close()

    consumer = EventConsumer(
        name="rt-test", pool=pool, handlers={TENANT_CREATED: handler}, max_attempts=3, retry_delay=0.01,
        consumer_factory=lambda: create_consumer(settings, "rt-test", [TENANTS_TOPIC]),
        producer_factory=lambda: create_producer(settings),
    )
    task = asyncio.create_task(consumer.run())
    for _ in range(300):
        if await pool.fetchval("SELECT count(*) FROM effects WHERE tenant = 't-2'"):
            break
        await asyncio.sleep(0.1)
    consumer.stop()
    await asyncio.wait_for(task, 15)

    effects = {r["tenant"]: r["n"] for r in await pool.fetch(
        "SELECT tenant, count(*) AS n FROM effects GROUP BY tenant")}
    assert effects == {"t-1": 1, "flaky": 1, "outage": 1, "t-2": 1}  # failures rolled back with their inbox row
    assert calls["t-1"] == 1 and calls["flaky"] == 3 and calls["doomed"] == 3 and calls["outage"] == 8
    dead = await asyncio.to_thread(_read_all, broker.bootstrap, dead_letter_topic(TENANTS_TOPIC), 1)
    assert [dict(r.headers)["ce_id"].decode() for r in dead] == [doomed.id]
    assert b"this one never works" in dict(dead[0].headers)["dlq_error"]
    await pool.close()
