"""A consumer that receives an event it cannot read or that fails its schema sends it to the
dead-letter topic with the reason, and goes on with the next one: for every topic and every group
that consumes it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from contracts import DEMANDS_TOPIC, MATCHES_TOPIC, OFFER_PUBLISHED, OFFERS_TOPIC, PROVIDERS_TOPIC, TENANTS_TOPIC
from runtime.kafka import dead_letter_topic
from runtime.service import ConsumerSpec
from services.catalog.consumers import CONSUMERS as CATALOG_CONSUMERS
from services.matching.consumers import CONSUMERS as MATCHING_CONSUMERS
from services.notifications.bootstrap import create_runtime as notifications_runtime
from services.notifications.settings import NotificationsSettings
from tests.platform import Platform, alone_at, demand_body, lonely_place, offer_body, wait_until


def _headers(event_id: str, event_type: str = OFFER_PUBLISHED) -> list[tuple[str, bytes]]:
    return [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_source", b"test"),
            ("ce_type", event_type.encode()), ("ce_tenant", b"lueneburg"), ("content-type", b"application/json")]


def test_poison_offers_go_to_the_dead_letter_topic_and_matching_goes_on(platform: Platform) -> None:
    poison = {
        "not json": (str(uuid.uuid4()), b"{offer: nope", _headers),
        "fails schema": (str(uuid.uuid4()), b'{"id": "x", "title": 5}', _headers),
        "no envelope": (str(uuid.uuid4()), b'{"id": "x"}', lambda i: [("ce_id", i.encode())]),
    }
    producer = KafkaProducer(bootstrap_servers=platform.config.bootstrap, acks="all")
    for event_id, value, headers in poison.values():
        producer.send(OFFERS_TOPIC, key=event_id.encode(), value=value, headers=headers(event_id)).get(10)
    producer.close()

    dlq = KafkaConsumer(dead_letter_topic(OFFERS_TOPIC), bootstrap_servers=platform.config.bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=500, group_id=None)
    dead: dict[str, dict[str, str]] = {}

    def all_dead() -> bool:
        for record in dlq:
            dead[(record.key or b"").decode(errors="replace")] = {k: (v or b"").decode() for k, v in record.headers}
        return all(event_id in dead for event_id, _, _ in poison.values())

    wait_until("every poison event in the dead-letter topic", all_dead, timeout=30)
    dlq.close()
    for reason, (event_id, _, _) in poison.items():
        headers = dead[event_id]
        assert headers["dlq_consumer"] == "matching", reason
        assert headers["dlq_error"], reason
        assert headers["dlq_source"].startswith(f"{OFFERS_TOPIC}/"), reason
    assert "not JSON" in dead[poison["not json"][0]]["dlq_error"]
    assert "/title" in dead[poison["fails schema"][0]]["dlq_error"]
    assert "missing CloudEvents headers" in dead[poison["no envelope"][0]]["dlq_error"]

    # The consumer went on: an offer published after the poison is matched.
    with platform.client("catalog", "lueneburg-provider") as api:
        provider = api.post("/v1/providers", json={"name": "Nach dem Gift", "emails": ["a@b.example"]}).json()
        offer_at, demand_at = alone_at(lonely_place())  # no look-alike of an earlier test takes its place
        offer = api.post("/v1/offers", json=offer_body(provider["id"], **offer_at)).json()
    with platform.client("matching", "lueneburg-counselor") as api:
        demand = api.post("/v1/demands", json=demand_body(**demand_at)).json()
        wait_until("the later offer matched", lambda: any(
            m["offer_id"] == offer["id"] for m in api.get(f"/v1/demands/{demand['id']}/matches").json()["items"]))


def consumers() -> dict[str, tuple[str, ConsumerSpec]]:
    """Every consumer group of the platform with the service (and database) it runs in, as the
    services wire them; identity consumes nothing."""
    notifications = notifications_runtime(NotificationsSettings(), dispatcher=None).consumer_specs
    wired = {"catalog": CATALOG_CONSUMERS, "matching": MATCHING_CONSUMERS, "notifications": notifications}
    return {spec.group: (service, spec) for service, specs in wired.items() for spec in specs}


# Records no consumer can read, whatever their type: (value, headers of event id i and type t, what
# the dead letter's reason says).
MALFORMED = {
    "not JSON": (b"\xff\xfe not json", _headers, "payload is not JSON"),
    "not an object": (b"[1, 2, 3]", _headers, "payload must be a JSON object"),
    "no tenant": (b"{}", lambda i, t: [h for h in _headers(i, t) if h[0] != "ce_tenant"], "ce_tenant"),
    "bad sequence": (b"{}", lambda i, t: [*_headers(i, t), ("ce_sequence", b"-1")], "ce_sequence"),
    "nested too deep": (b'{"a":' * 5000 + b"1" + b"}" * 5000, _headers, "payload is not JSON"),
    "key not UTF-8": (b"{}", _headers, "key is not UTF-8"),
}
KEYS = {"key not UTF-8": b"\xff\xfe\xfd"}  # the record's key where it is not the event id
SCHEMA_INVALID = b'{"id": 7, "tenant": []}'  # breaks every event type's schema


def _last_record(platform: Platform, topic: str, key: str) -> ConsumerRecord | None:
    consumer = KafkaConsumer(topic, bootstrap_servers=platform.config.bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=700)
    found = [r for r in consumer if r.key == key.encode()]
    consumer.close()
    return found[-1] if found else None


def _in_inbox(platform: Platform, service: str, group: str, event_id: str) -> bool:
    async def look() -> bool:
        conn = await asyncpg.connect(platform.config.service_admin_url(service))
        try:
            return bool(await conn.fetchval("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2",
                                            group, event_id))
        finally:
            await conn.close()
    return asyncio.run(look())


def test_every_consumer_dead_letters_poison_of_every_type_it_handles_and_goes_on(platform: Platform) -> None:
    """Into every topic a service consumes: the malformed records, and a schema-invalid event of every
    type its consumers handle; then a valid event of the topic on the same partition. Each group
    dead-letters the malformed records and the invalid events of its types with the reason, ignores
    the types it does not handle, and applies the valid event after them (it goes on)."""
    groups = consumers()
    topics: dict[str, dict[str, set[str]]] = {}  # topic -> group -> the event types it handles
    for group, (_, spec) in groups.items():
        for topic in spec.topics:
            topics.setdefault(topic, {})[group] = set(spec.handlers)

    # Real events of each topic (re-sent below as the valid event after the poison): a provider, its
    # offer, a demand it is matched to, and another demand that is closed.
    with platform.client("catalog", "lueneburg-provider") as api:
        provider = api.post("/v1/providers", json={"name": "Giftprobe", "emails": ["g@b.example"]}).json()
        offer_at, demand_at = alone_at(lonely_place())
        offer = api.post("/v1/offers", json=offer_body(provider["id"], **offer_at)).json()
    with platform.client("matching", "lueneburg-counselor") as api:
        matched = api.post("/v1/demands", json=demand_body(**demand_at)).json()
        closed = api.post("/v1/demands", json=demand_body(**alone_at(lonely_place())[1])).json()
        assert api.post(f"/v1/demands/{closed['id']}/close").status_code == 200
    keys = {TENANTS_TOPIC: "lueneburg", PROVIDERS_TOPIC: provider["id"], OFFERS_TOPIC: offer["id"],
            DEMANDS_TOPIC: closed["id"], MATCHES_TOPIC: matched["id"]}
    assert set(topics) == set(keys), "a consumed topic without a valid event for this test"

    def handled_by_all(topic: str) -> ConsumerRecord | None:
        record = _last_record(platform, topic, keys[topic])
        types = set.intersection(*topics[topic].values())
        return record if record is not None and dict(record.headers)["ce_type"].decode() in types else None

    valid = {topic: wait_until(f"an event of {topic} every consumer handles", lambda t=topic: handled_by_all(t))
             for topic in topics}

    producer = KafkaProducer(bootstrap_servers=platform.config.bootstrap, acks="all")
    malformed: dict[str, tuple[str, str]] = {}  # event id -> (topic, what its reason says)
    invalid: dict[str, tuple[str, str]] = {}  # event id -> (topic, event type)
    resent: dict[str, str] = {}  # topic -> id of the valid event after the poison
    for topic, handlers in topics.items():
        partition = valid[topic].partition  # the valid event comes after the poison only on one partition

        def send(value: bytes, headers: list[tuple[str, bytes]], key: bytes, topic: str = topic,
                 partition: int = partition) -> None:
            producer.send(topic, key=key, value=value, headers=headers, partition=partition).get(10)

        some_type = sorted(set.union(*handlers.values()))[0]
        for name, (value, headers, reason) in MALFORMED.items():
            event_id = str(uuid.uuid4())
            send(value, headers(event_id, some_type), KEYS.get(name, event_id.encode()))
            malformed[event_id] = (topic, reason)
        for event_type in sorted(set.union(*handlers.values())):
            event_id = str(uuid.uuid4())
            send(SCHEMA_INVALID, _headers(event_id, event_type), event_id.encode())
            invalid[event_id] = (topic, event_type)
        # The real event again under a new id, without its sequence number: applied, not skipped as stale.
        resent[topic] = str(uuid.uuid4())
        headers = [(k, resent[topic].encode() if k == "ce_id" else v) for k, v in valid[topic].headers
                   if k != "ce_sequence"]
        send(valid[topic].value, headers, valid[topic].key)
    producer.close()

    for topic, handlers in topics.items():
        for group in handlers:
            wait_until(f"{group} applied the valid {topic} event after the poison",
                       lambda g=group, t=topic: _in_inbox(platform, groups[g][0], g, resent[t]), timeout=60)

    dead: dict[tuple[str, str], str] = {}  # (event id, group) -> reason
    for topic in topics:
        dlq = KafkaConsumer(dead_letter_topic(topic), bootstrap_servers=platform.config.bootstrap,
                            auto_offset_reset="earliest", consumer_timeout_ms=2000, group_id=None)
        for record in dlq:
            headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers}
            dead[headers.get("ce_id", ""), headers["dlq_consumer"]] = headers["dlq_error"]
        dlq.close()
    for event_id, (topic, reason) in malformed.items():
        for group in topics[topic]:
            assert reason in dead.get((event_id, group), ""), (topic, group, reason, dead.get((event_id, group)))
    for event_id, (topic, event_type) in invalid.items():
        for group, handled in topics[topic].items():
            if event_type in handled:
                assert "payload invalid" in dead.get((event_id, group), ""), (topic, group, event_type)
            else:  # another consumer's type: not this one's to judge
                assert (event_id, group) not in dead, (topic, group, event_type)


def test_a_record_with_a_header_without_value_is_dead_lettered_and_the_consumer_goes_on(platform: Platform) -> None:
    """Valid Kafka that kafka-python cannot send but Java clients do: a header without a value. The
    record is made here as the consumer would receive it; its dead letter goes to the real broker.
    Before, reading it raised outside InvalidEvent, and then the dead-lettering itself failed
    (kafka-python sends bytes only): the consumer read the same record again every second."""
    from runtime.inbox import EventConsumer

    event_id = str(uuid.uuid4())
    headers = [(k, None if k == "ce_tenant" else v) for k, v in _headers(event_id)] + [("x-java-null", None)]
    record = ConsumerRecord(OFFERS_TOPIC, 0, -1, 10**9, 0, 0, event_id.encode(), b"{}", headers, None, 36, 2, -1)
    consumer = EventConsumer(name="matching", pool=None, handlers={OFFER_PUBLISHED: None},  # type: ignore[arg-type]
                             consumer_factory=lambda: None,  # type: ignore[arg-type,return-value]
                             producer_factory=lambda: KafkaProducer(bootstrap_servers=platform.config.bootstrap,
                                                                    acks="all"))
    asyncio.run(consumer.process(record))  # returns: the record is dead-lettered, not raised

    dead = _last_record(platform, dead_letter_topic(OFFERS_TOPIC), event_id)
    assert dead is not None
    reasons = {k: (v or b"").decode() for k, v in dead.headers}
    assert "ce_tenant" in reasons["dlq_error"] and reasons["x-java-null"] == ""
