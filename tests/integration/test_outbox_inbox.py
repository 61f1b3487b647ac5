"""The outbox relay and the idempotent inbox, against a broker and a database of their own:
events written while the broker is down are published once it is up, in order per aggregate;
a redelivered event has its effect once; a failing one is retried, then dead-lettered; an outage
of what the handler stands on is waited out, never dead-lettered."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from contracts import TENANT_CREATED, TENANTS_TOPIC
from deploy.local.stack import port_open, tansu_binary, wait_for
from runtime import inbox, metrics
from runtime.db import create_pool, migrate
from runtime.errors import EventTooLarge
from runtime.events import Event, InvalidEvent
from runtime.http import install_problem_handlers
from runtime.inbox import EventConsumer, apply_if_newer, replay_dead_letters
from runtime.kafka import create_consumer, create_producer, dead_letter_topic, ensure_topics
from runtime.outbox import OutboxRelay, add_many_to_outbox, add_to_outbox, outgoing, stuck_rows
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
            # The connection is lost mid-transaction, more often than max_attempts: still no DLQ.
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
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


def _consumer(settings: ServiceSettings, name: str, handler, **kwargs) -> EventConsumer:
    return EventConsumer(
        name=name, pool=kwargs.pop("pool"), handlers={TENANT_CREATED: handler},
        consumer_factory=lambda: create_consumer(settings, name, [TENANTS_TOPIC]),
        producer_factory=lambda: create_producer(settings), **kwargs)


def _publish(bootstrap: str, *events: Event) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for event in events:
        producer.send(TENANTS_TOPIC, key=event.key.encode(), value=event.value(), headers=event.headers()).get(10)
    producer.close()


async def _until(what: str, check, seconds: float = 30.0):
    for _ in range(int(seconds * 10)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


async def _stop(*consumers_and_tasks) -> None:
    for consumer, _ in consumers_and_tasks:
        consumer.stop()
    for _, task in consumers_and_tasks:
        await asyncio.wait_for(task, 20)


async def test_the_preparer_sees_each_polled_batch_first_and_its_failure_stops_nothing(broker, settings) -> None:
    """A consumer's preparer gets a polled batch's events before any of them is handled (matching
    encodes new offers' texts together there); when it raises, every event is still handled once."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    handled: list[str] = []
    prepared: list[list[str]] = []
    seen_when_prepared: list[int] = []

    async def handler(conn: asyncpg.Connection, event: Event) -> None:
        handled.append(event.data["id"])
        await conn.execute("INSERT INTO effects (event_id, tenant) VALUES ($1, $2)", event.id, event.data["id"])

    async def prepare(events: list[Event]) -> None:
        prepared.append([e.data["id"] for e in events])
        seen_when_prepared.append(len(handled))
        if len(prepared) == 1:
            raise RuntimeError("the preparer's own bug")

    events = [_tenant_event(n, "k") for n in range(6)]
    _publish(broker.bootstrap, *events)  # on the broker before the consumer polls: one batch
    consumer = _consumer(settings, "prep", handler, pool=pool, prepare=prepare)
    task = asyncio.create_task(consumer.run())
    await _until("every event handled", lambda: pool.fetchval("SELECT count(*) = 6 FROM effects"))
    _publish(broker.bootstrap, _tenant_event(7, "k"))
    await _until("the later event handled", lambda: pool.fetchval("SELECT count(*) = 7 FROM effects"))
    await _stop((consumer, task))

    assert sorted(handled) == sorted(f"t-{n}" for n in (*range(6), 7))  # each once, the failure notwithstanding
    assert [i for batch in prepared for i in batch] == [f"t-{n}" for n in (*range(6), 7)]
    assert len(prepared[0]) > 1  # the window: several events in one poll
    # each batch prepared before any of its events was handled
    done = 0
    for batch, seen in zip(prepared, seen_when_prepared, strict=True):
        assert seen == done
        done += len(batch)
    await pool.close()


async def test_a_deadlock_between_two_consumers_is_retried_never_dead_lettered(broker, settings) -> None:
    """Two consumer groups update the same two rows in opposite order; PostgreSQL kills one of each
    pair as the deadlock's victim. Even with max_attempts=1 nothing may be dead-lettered."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    admin = await asyncpg.connect(settings.admin_database_url)
    await admin.execute(f'SET ROLE "{settings.owner_role}"')
    await admin.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);"
                        "INSERT INTO counters VALUES (1, 0), (2, 0)")
    await admin.close()
    barriers: dict[str, asyncio.Barrier] = {}
    first_try: set[tuple[str, str]] = set()

    def locking_in_order(name: str, first: int, second: int):
        async def handler(conn: asyncpg.Connection, event: Event) -> None:
            await conn.execute("UPDATE counters SET n = n + 1 WHERE id = $1", first)
            if event.key != "warm-up" and (name, event.id) not in first_try:  # meet the other holding the other row
                first_try.add((name, event.id))
                try:
                    await asyncio.wait_for(barriers.setdefault(event.id, asyncio.Barrier(2)).wait(), 5)
                except TimeoutError:
                    pass
            await conn.execute("UPDATE counters SET n = n + 1 WHERE id = $1", second)
        return handler

    events = [_tenant_event(n, f"k{n}") for n in range(3)]
    before = metrics.EVENTS_RETRIED.labels("left", "transient")._value.get() + \
        metrics.EVENTS_RETRIED.labels("right", "transient")._value.get()
    left = _consumer(settings, "left", locking_in_order("left", 1, 2), pool=pool, max_attempts=1, retry_delay=0.05)
    right = _consumer(settings, "right", locking_in_order("right", 2, 1), pool=pool, max_attempts=1,
                      retry_delay=0.05)
    tasks = [(left, asyncio.create_task(left.run())), (right, asyncio.create_task(right.run()))]
    _publish(broker.bootstrap, _tenant_event(9, "warm-up"))  # both consumers up before the contention
    await _until("both consumers joined", lambda: pool.fetchval("SELECT count(*) = 2 FROM inbox"))
    _publish(broker.bootstrap, *events)
    await _until("both consumers through every event", lambda: pool.fetchval(
        "SELECT count(*) = $1 FROM inbox", 2 * len(events) + 2), seconds=60)
    await _stop(*tasks)

    deadlocks = metrics.EVENTS_RETRIED.labels("left", "transient")._value.get() + \
        metrics.EVENTS_RETRIED.labels("right", "transient")._value.get() - before
    assert deadlocks >= 1  # the window was hit
    assert [r["n"] for r in await pool.fetch("SELECT n FROM counters ORDER BY id")] == [8, 8]  # 4 events, 2 each
    assert await asyncio.to_thread(_read_all, broker.bootstrap, dead_letter_topic(TENANTS_TOPIC), 1, 2000) == []
    await pool.close()


async def test_a_handler_raising_timeout_error_is_dead_lettered_and_replayed_once_fixed(broker, settings) -> None:
    """TimeoutError is an OSError; raised by the handler's own code while the database is fine, it
    is the handler's failure: a bounded number of tries, then the dead-letter topic with the reason,
    and the consumer goes on. Once the cause is fixed, the replay command brings it back, once."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    broken = {"yes": True}
    calls: dict[str, int] = {}

    async def handler(conn: asyncpg.Connection, event: Event) -> None:
        calls[event.data["id"]] = calls.get(event.data["id"], 0) + 1
        if event.data["id"] == "slow" and broken["yes"]:
            raise TimeoutError("the address service did not answer")
        await conn.execute("INSERT INTO effects (event_id, tenant) VALUES ($1, $2)", event.id, event.data["id"])

    slow = Event(TENANT_CREATED, "test", "slow", "slow", {"id": "slow", "name": "s", "status": "active"})
    after = _tenant_event(1, "after")
    _publish(broker.bootstrap, slow, after)
    consumer = _consumer(settings, "rt-timeout", handler, pool=pool, max_attempts=3, retry_delay=0.01)
    task = asyncio.create_task(consumer.run())
    await _until("the event after the failing one handled", lambda: pool.fetchval(
        "SELECT count(*) FROM effects WHERE tenant = 't-1'"))
    dead = await asyncio.to_thread(_read_all, broker.bootstrap, dead_letter_topic(TENANTS_TOPIC), 1)
    assert [dict(r.headers)["ce_id"].decode() for r in dead] == [slow.id]
    assert dict(dead[0].headers)["dlq_error"] == b"TimeoutError: the address service did not answer"
    assert calls["slow"] == 3

    broken["yes"] = False
    assert await asyncio.to_thread(replay_dead_letters, settings, TENANTS_TOPIC) == 1
    replay = await asyncio.create_subprocess_exec(  # the operators' command resumes where that one stopped
        sys.executable, "-m", "runtime", "dlq-replay", "--topic", TENANTS_TOPIC,
        env={**os.environ, "BR_KAFKA_BOOTSTRAP": broker.bootstrap}, stdout=asyncio.subprocess.PIPE)
    out, _ = await replay.communicate()
    assert (replay.returncode, out.decode().strip()) == (
        0, f"replayed 0 event(s) from {TENANTS_TOPIC}.dlq into {TENANTS_TOPIC}")
    await _until("the replayed event handled", lambda: pool.fetchval(
        "SELECT count(*) FROM effects WHERE tenant = 'slow'"))
    duplicates = metrics.EVENTS_CONSUMED.labels("rt-timeout", TENANT_CREATED, "duplicate")
    seen = duplicates._value.get()
    _publish(broker.bootstrap, after)  # a redelivery of something handled changes nothing
    await _until("the redelivery seen", lambda: asyncio.sleep(0, duplicates._value.get() > seen))
    await _stop((consumer, task))
    effects = {r["tenant"]: r["n"] for r in await pool.fetch(
        "SELECT tenant, count(*) AS n FROM effects GROUP BY tenant")}
    assert effects == {"t-1": 1, "slow": 1}
    await pool.close()


async def test_a_dead_letter_the_broker_does_not_take_back_is_reported_and_sent_by_the_next_replay(
        broker, settings, monkeypatch) -> None:
    """Before, the replay never asked its sends: kafka-python's flush only logs a failed record, so a
    dead letter the broker refused counted as replayed and its offset was committed: lost for good."""
    await asyncio.to_thread(broker.start)
    letters = [_tenant_event(n, "one-key") for n in range(3)]  # one partition: offset order is send order
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for event in letters:
        producer.send(dead_letter_topic(TENANTS_TOPIC), key=event.key.encode(), value=event.value(),
                      headers=[*event.headers(), ("dlq_consumer", b"rt")]).get(10)
    producer.close()
    refused = {letters[1].id}

    class RefusingOne(KafkaProducer):  # the real producer, but the broker's answer for one record fails
        def send(self, topic, **record):
            if dict(record["headers"])["ce_id"].decode() in refused:
                return _Failed()
            return super().send(topic, **record)

    monkeypatch.setattr(inbox, "KafkaProducer", RefusingOne)
    with pytest.raises(inbox.ReplayIncomplete, match="2 dead letter"):
        await asyncio.to_thread(replay_dead_letters, settings, TENANTS_TOPIC)
    refused.clear()  # the broker takes it now
    assert await asyncio.to_thread(replay_dead_letters, settings, TENANTS_TOPIC) == 2  # the refused one and the next
    assert await asyncio.to_thread(replay_dead_letters, settings, TENANTS_TOPIC) == 0
    back = await asyncio.to_thread(_read_all, broker.bootstrap, TENANTS_TOPIC, 4, 3_000)
    ids = [dict(r.headers)["ce_id"].decode() for r in back]
    assert sorted(set(ids)) == sorted(e.id for e in letters)  # none lost; the one after it came twice
    assert ids.count(letters[1].id) == 1


async def test_a_stale_event_never_overwrites_a_newer_state(broker, settings) -> None:
    """The outbox numbers each aggregate's events (ce_sequence); a consumer that gets an older state
    after a newer one (a replay, a re-send) keeps the newer."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    async with pool.acquire() as conn, conn.transaction():
        for name in ("erste", "zweite", "dritte"):
            await add_to_outbox(conn, TENANTS_TOPIC, Event(TENANT_CREATED, "test", "agg", "agg",
                                                           {"id": "agg", "name": name, "status": "active"}))
        await add_to_outbox(conn, TENANTS_TOPIC, _tenant_event(7, "other"))
    rows = await pool.fetch("SELECT aggregate_key, sequence, headers FROM outbox ORDER BY id")
    assert [(r["aggregate_key"], r["sequence"]) for r in rows] == [("agg", 1), ("agg", 2), ("agg", 3), ("other", 1)]
    assert ["ce_sequence", "3"] in rows[2]["headers"]
    third, second = (Event.from_record(b"agg", p, [(k, v.encode()) for k, v in r["headers"]])
                     for r, p in ((rows[2], b'{"id":"agg","name":"dritte","status":"active"}'),
                                  (rows[1], b'{"id":"agg","name":"zweite","status":"active"}')))
    assert (third.sequence, second.sequence) == (3, 2)
    unnumbered = Event(TENANT_CREATED, "test", "agg", "agg", {"id": "agg", "name": "alt", "status": "active"})

    async def handler(conn: asyncpg.Connection, event: Event) -> None:
        await conn.execute("DELETE FROM effects WHERE event_id = 'state'")
        await conn.execute("INSERT INTO effects (event_id, tenant) VALUES ('state', $1)", event.data["name"])

    _publish(broker.bootstrap, unnumbered, third, second)  # the older state arrives last
    consumer = _consumer(settings, "rt-order", handler, pool=pool)
    task = asyncio.create_task(consumer.run())
    await _until("all three seen", lambda: pool.fetchval("SELECT count(*) = 3 FROM inbox"))
    await _stop((consumer, task))
    assert await pool.fetchval("SELECT tenant FROM effects WHERE event_id = 'state'") == "dritte"
    assert await pool.fetchval("SELECT sequence FROM inbox_sequences WHERE consumer = 'rt-order'") == 3
    async with pool.acquire() as conn, conn.transaction():  # the helper handlers call for their own aggregates
        assert await apply_if_newer(conn, "svc", "match:d1:o1", 5)
        assert not await apply_if_newer(conn, "svc", "match:d1:o1", 4)
        assert not await apply_if_newer(conn, "svc", "match:d1:o1", 5)
        assert await apply_if_newer(conn, "svc", "match:d1:o1", 6)
        assert await apply_if_newer(conn, "svc", "match:d1:o1", None)
    await pool.close()


async def test_after_a_restore_new_events_are_numbered_above_what_consumers_applied(settings) -> None:
    """A database restored to an earlier time gives its aggregates numbers again that consumers have
    applied already (their inboxes are not restored): every new event was skipped as stale. Once the
    operator runs `python -m runtime outbox-restored`, new numbers lie above all given before, for
    aggregates the restored database knows and for those it lost."""
    from runtime.__main__ import main as operator_command

    pool = await create_pool(settings)

    async def publish(key: str) -> int:
        async with pool.acquire() as conn, conn.transaction():
            return await add_to_outbox(conn, TENANTS_TOPIC, Event(TENANT_CREATED, "test", key, key,
                                                                  {"id": key, "name": key, "status": "active"}))

    async def applied(sequence: int, key: str) -> bool:  # what a consumer of these events does
        async with pool.acquire() as conn, conn.transaction():
            return await apply_if_newer(conn, "consumer", f"{TENANTS_TOPIC}/{key}", sequence)

    for key in ("kept", "kept", "kept", "lost", "lost"):
        assert await applied(await publish(key), key)
    # the restore: back to when "kept" had one event and "lost" did not exist
    await pool.execute("UPDATE outbox_sequences SET last_sequence = 1 WHERE aggregate_key = 'kept'")
    await pool.execute("DELETE FROM outbox_sequences WHERE aggregate_key = 'lost'")
    assert not await applied(await publish("kept"), "kept")  # the fault: skipped as stale

    env = {"BR_DATABASE_PREFIX": settings.database_prefix, "BR_POSTGRES_HOST": settings.postgres_host,
           "BR_POSTGRES_PORT": str(settings.postgres_port)}
    os.environ.update(env)
    try:
        assert await asyncio.to_thread(operator_command, ["outbox-restored", "--service", settings.service]) == 0
    finally:
        for name in env:
            os.environ.pop(name)
    assert await applied(await publish("kept"), "kept")
    assert await applied(await publish("lost"), "lost")
    assert await applied(await publish("lost"), "lost")  # and on in order
    await pool.close()


class RefusingProducer:
    """A real producer to the real broker, except that the broker's answer for the chosen records is
    a failure the first ``times`` times (a leader lost for one batch, a request timed out)."""

    refused = 0  # across the producers the relay makes

    def __init__(self, settings: ServiceSettings, refuse: set[str], times: int) -> None:
        self._producer = create_producer(settings)
        self._refuse, self._times = refuse, times

    def send(self, topic, *, key, value, headers):
        event_id = dict(headers)["ce_id"].decode()
        if event_id in self._refuse and RefusingProducer.refused < self._times:
            RefusingProducer.refused += 1
            return _Failed()
        return self._producer.send(topic, key=key, value=value, headers=headers)

    def flush(self, timeout=None):
        self._producer.flush(timeout=timeout)

    def close(self, timeout=None):
        self._producer.close(timeout=timeout)


class _Failed:
    def get(self, timeout=None):
        raise KafkaTimeoutError("Batch for TopicPartition expired")


async def test_a_batch_whose_first_record_fails_keeps_each_aggregates_order(broker, settings) -> None:
    """The first record of a batch fails; the later records of its aggregate must not overtake it
    (a re-sent MatchFound landing after its MatchRetracted), and other aggregates go on meanwhile."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    events = [_tenant_event(n, key) for n, key in enumerate(["a", "a", "b", "a", "b"])]
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            await add_to_outbox(conn, TENANTS_TOPIC, event)
    RefusingProducer.refused = 0
    relay = OutboxRelay(settings.database_url, lambda: RefusingProducer(settings, {events[0].id}, times=3),
                        sweep_seconds=0.2, max_retry_seconds=0.5)
    task = asyncio.create_task(relay.run())
    records = await asyncio.to_thread(_read_all, broker.bootstrap, TENANTS_TOPIC, 5)
    relay.stop()
    await asyncio.wait_for(task, 10)
    await pool.close()

    assert RefusingProducer.refused == 3
    by_key: dict[str, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(r.key.decode(), []).append(int(dict(r.headers)["ce_tenant"].decode()[2:]))
    assert by_key == {"a": [0, 1, 3], "b": [2, 4]}  # each once, in order


async def test_a_row_the_broker_client_refuses_holds_only_its_aggregate_until_skipped(broker, settings) -> None:
    """A row too large for the producer (written before the size check existed) never goes. It holds
    back its own aggregate only, shows in the stuck-row metrics, and the operator's skip command
    takes it out of the way with the reason kept; the aggregate's later rows then go, in order."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    async with pool.acquire() as conn, conn.transaction():
        for n, key in enumerate(["a", "a", "b"]):
            await add_to_outbox(conn, TENANTS_TOPIC, _tenant_event(n, key))
        await conn.execute("UPDATE outbox SET payload = $1 WHERE sequence = 1 AND aggregate_key = 'a'",
                           b'{"pad":"' + b"x" * 2_000_000 + b'"}')
    relay = OutboxRelay(settings.database_url, lambda: create_producer(settings), sweep_seconds=0.2,
                        max_retry_seconds=0.2)
    task = asyncio.create_task(relay.run())
    records = await asyncio.to_thread(_read_all, broker.bootstrap, TENANTS_TOPIC, 1)
    assert [r.key for r in records] == [b"b"]
    await _until("the row counted as stuck", lambda: asyncio.sleep(0, metrics.OUTBOX_STUCK._value.get() >= 1))
    assert metrics.OUTBOX_OLDEST_PENDING_AGE._value.get() > 0
    async with pool.acquire() as conn:
        [stuck] = await stuck_rows(conn)
        assert (stuck["aggregate_key"], stuck["sequence"]) == ("a", 1) and "MessageSizeTooLarge" in stuck["last_error"]
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE aggregate_key = 'a' AND sent_at IS NULL") == 2
    skip = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtime", "outbox-skip", "--service", settings.service, "--id", str(stuck["id"]),
        "--reason", "Testzeile ohne Empfänger", "--operator", "ops-test",
        env={**os.environ, "BR_DATABASE_PREFIX": settings.database_prefix}, stdout=asyncio.subprocess.PIPE)
    out, _ = await skip.communicate()
    assert skip.returncode == 0, out
    records = await asyncio.to_thread(_read_all, broker.bootstrap, TENANTS_TOPIC, 2)
    relay.stop()
    await asyncio.wait_for(task, 10)
    assert sorted((r.key, dict(r.headers)["ce_sequence"]) for r in records) == [(b"a", b"2"), (b"b", b"1")]
    row = await pool.fetchrow("SELECT skip_reason, skipped_by, sent_at FROM outbox WHERE id = $1", stuck["id"])
    assert dict(row) == {"skip_reason": "Testzeile ohne Empfänger", "skipped_by": "ops-test", "sent_at": None}
    await _until("the gauge back to zero", lambda: asyncio.sleep(0, metrics.OUTBOX_STUCK._value.get() == 0))
    await pool.close()


class NoMetadataProducer(RefusingProducer):
    """A real producer to the real broker, except that the chosen records are refused by ``send``
    itself, as kafka-python refuses a record for a topic the broker does not know: its metadata never
    comes (a topic deployed before its KafkaTopic exists, or removed)."""

    def send(self, topic, *, key, value, headers):
        if dict(headers)["ce_id"].decode() in self._refuse:
            raise KafkaTimeoutError("Failed to update metadata after 5.0 secs.")
        return self._producer.send(topic, key=key, value=value, headers=headers)


async def test_a_row_the_producer_refuses_to_send_holds_only_its_aggregate_and_shows_as_stuck(broker, settings) -> None:
    """Before, ``send`` raising anything but MessageSizeTooLarge ended the round unrecorded: no row
    of any aggregate went out, the rows acknowledged were sent again every round, and the row's
    attempts stayed 0, so neither the stuck-row gauge nor ``outbox-stuck`` showed it."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    events = [_tenant_event(n, key) for n, key in enumerate(["a", "b", "a", "b"])]
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            await add_to_outbox(conn, TENANTS_TOPIC, event)
    relay = OutboxRelay(settings.database_url, lambda: NoMetadataProducer(settings, {events[1].id}, times=0),
                        sweep_seconds=0.2, max_retry_seconds=0.2)
    task = asyncio.create_task(relay.run())
    records = await asyncio.to_thread(_read_all, broker.bootstrap, TENANTS_TOPIC, 3, 5_000)
    assert sorted((r.key, dict(r.headers)["ce_sequence"]) for r in records) == [(b"a", b"1"), (b"a", b"2")]
    await _until("the row counted as stuck", lambda: asyncio.sleep(0, metrics.OUTBOX_STUCK._value.get() >= 1))
    async with pool.acquire() as conn:
        [stuck] = await stuck_rows(conn)
    relay.stop()
    await asyncio.wait_for(task, 10)
    assert (stuck["aggregate_key"], stuck["sequence"]) == ("b", 1) and "KafkaTimeoutError" in stuck["last_error"]
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE aggregate_key = 'b' AND sent_at IS NULL") == 2
    await pool.close()


class SlowFlushProducer(RefusingProducer):
    """A real producer to the real broker whose first flush gives up (KafkaTimeoutError, as for a
    partition without a leader) after its records were acknowledged."""

    def flush(self, timeout=None):
        self._producer.flush(timeout=timeout)
        if RefusingProducer.refused < self._times:
            RefusingProducer.refused += 1
            raise KafkaTimeoutError("Timeout after waiting for 15 secs.")


async def test_a_flush_that_times_out_sends_nothing_twice(broker, settings) -> None:
    """Before, the flush's timeout ended the round before its acknowledged rows were marked sent, and
    the next round sent them again."""
    await asyncio.to_thread(broker.start)
    pool = await create_pool(settings)
    async with pool.acquire() as conn, conn.transaction():
        for n, key in enumerate(["a", "b", "a"]):
            await add_to_outbox(conn, TENANTS_TOPIC, _tenant_event(n, key))
    RefusingProducer.refused = 0
    relay = OutboxRelay(settings.database_url, lambda: SlowFlushProducer(settings, set(), times=1),
                        sweep_seconds=0.2, max_retry_seconds=0.2)
    task = asyncio.create_task(relay.run())
    await _until("every row sent", lambda: pool.fetchval("SELECT bool_and(sent_at IS NOT NULL) FROM outbox"))
    records = await asyncio.to_thread(_read_all, broker.bootstrap, TENANTS_TOPIC, 4, 3_000)
    relay.stop()
    await asyncio.wait_for(task, 10)
    await pool.close()
    assert RefusingProducer.refused == 1
    assert sorted((r.key, dict(r.headers)["ce_sequence"]) for r in records) == [
        (b"a", b"1"), (b"a", b"2"), (b"b", b"1")]  # each once


async def test_an_event_breaking_its_contract_is_refused_when_written_alone_or_in_a_batch(settings) -> None:
    """The contract is checked where the change can still fail cleanly: a tenant event without its
    name is refused by add_to_outbox and, given ahead as Outgoing or not, by add_many_to_outbox, and
    the business change of its transaction rolls back with it."""
    pool = await create_pool(settings)
    broken = Event(TENANT_CREATED, "test", "broken", "broken", {"id": "broken", "status": "active"})
    fine = Event(TENANT_CREATED, "test", "fine", "fine", {"id": "fine", "name": "Gut", "status": "active"})
    writes = (lambda conn: add_to_outbox(conn, TENANTS_TOPIC, broken),
              lambda conn: add_many_to_outbox(conn, TENANTS_TOPIC, [fine, broken]),
              lambda conn: add_many_to_outbox(conn, TENANTS_TOPIC, [outgoing(fine), broken]))
    for write in writes:
        with pytest.raises(InvalidEvent, match="name"):
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO effects (event_id, tenant) VALUES ('change', 'broken')")
                await write(conn)
    with pytest.raises(InvalidEvent, match="name"):
        outgoing(broken)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM effects") == 0
    await pool.close()


async def test_an_event_too_large_for_the_broker_is_refused_when_written(settings) -> None:
    pool = await create_pool(settings)
    big = Event(TENANT_CREATED, "test", "big", "big", {"id": "big", "name": "x" * 1_100_000, "status": "active"})
    with pytest.raises(EventTooLarge, match="more than the 1000000 bytes"):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO effects (event_id, tenant) VALUES ('change', 'big')")
            await add_to_outbox(conn, TENANTS_TOPIC, big)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM effects") == 0  # the business change rolled back too
    await pool.close()

    # The HTTP layer answers it as problem details, 413.
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/things")
    async def create() -> None:
        raise EventTooLarge("the event would be 1100200 bytes")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/things")
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "the event would be 1100200 bytes"


async def test_inbox_rows_go_once_the_topic_cannot_redeliver_them(settings) -> None:
    pool = await create_pool(settings)
    await pool.execute("INSERT INTO inbox (consumer, event_id, event_type, received_at) VALUES"
                       " ('c', 'old', 't', now() - interval '8 days'), ('c', 'new', 't', now() - interval '6 days')")
    relay = OutboxRelay(settings.database_url, lambda: create_producer(settings), inbox_retention_hours=168)
    task = asyncio.create_task(relay.run())
    await _until("the old inbox row purged", lambda: pool.fetchval("SELECT count(*) = 1 FROM inbox"))
    relay.stop()
    await asyncio.wait_for(task, 10)
    assert await pool.fetchval("SELECT event_id FROM inbox") == "new"
    await pool.close()


async def test_a_statement_running_past_the_timeout_is_stopped_and_answered_503(settings) -> None:
    """No request holds a connection and a core for minutes: the pool's statement timeout stops the
    statement, the caller gets 503 with Retry-After, and the pool goes on serving."""
    pool = await create_pool(settings.model_copy(update={"database_statement_timeout_ms": 200}))
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/slow")
    async def slow() -> dict:
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_sleep(5)")
        return {}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/slow")
    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    assert response.headers["content-type"] == "application/problem+json"
    assert "too long" in response.json()["detail"]
    assert await pool.fetchval("SELECT 1") == 1
    assert await pool.fetchval("SHOW statement_timeout") == "200ms"
    await pool.close()
