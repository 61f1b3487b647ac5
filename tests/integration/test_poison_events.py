"""A consumer that receives an event it cannot read or that fails its schema sends it to the
dead-letter topic with the reason, and goes on with the next one: for every topic and every group
that consumes it."""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from contracts import (
    MATCH_FOUND,
    MATCHES_TOPIC,
    OFFER_PUBLISHED,
    OFFERS_TOPIC,
    PROVIDER_REGISTERED,
    PROVIDERS_TOPIC,
    TENANT_CREATED,
    TENANTS_TOPIC,
)
from runtime.kafka import dead_letter_topic
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
            dead[record.key.decode()] = {k: v.decode() for k, v in record.headers}
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


def test_every_consumer_of_every_topic_dead_letters_poison_and_moves_past_it(platform: Platform) -> None:
    """Malformed events into every topic a service consumes: each consuming group dead-letters each
    one with the reason and commits past it (it goes on)."""
    bootstrap = platform.config.bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # Which group consumes which topic: what each has committed so far (the stack's own events).
    groups = {g: {tp.topic for tp in admin.list_group_offsets(g)[g]}
              for g in ("catalog", "matching", "notifications")}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    poisoned: dict[str, list[tuple[str, TopicPartition, int]]] = {}
    for topic, event_type in ((TENANTS_TOPIC, TENANT_CREATED), (PROVIDERS_TOPIC, PROVIDER_REGISTERED),
                              (OFFERS_TOPIC, OFFER_PUBLISHED), (MATCHES_TOPIC, MATCH_FOUND)):
        for value, headers in (
            (b"\xff\xfe not json", lambda i, t=event_type: _headers(i, t)),
            (b'{"id": 7, "status": []}', lambda i, t=event_type: _headers(i, t)),
            (b"[1, 2, 3]", lambda i, t=event_type: _headers(i, t)),
            (b"{}", lambda i, t=event_type: [(k, v) for k, v in _headers(i, t) if k != "ce_tenant"]),
            (b"{}", lambda i, t=event_type: [*_headers(i, t), ("ce_sequence", b"-1")]),
            # nested deeper than any parser likes
            (b'{"a":' * 5000 + b"1" + b"}" * 5000, lambda i, t=event_type: _headers(i, t)),
        ):
            event_id = str(uuid.uuid4())
            meta = producer.send(topic, key=event_id.encode(), value=value, headers=headers(event_id)).get(10)
            poisoned.setdefault(topic, []).append((event_id, TopicPartition(topic, meta.partition), meta.offset))
    producer.close()

    def past_all_poison() -> bool:
        for group, topics in groups.items():
            committed = admin.list_group_offsets(group)[group]
            for topic in topics & set(poisoned):
                for _, tp, offset in poisoned[topic]:
                    if committed.get(tp) is None or committed[tp].offset <= offset:
                        return False
        return True

    wait_until("every consuming group committed past the poison", past_all_poison, timeout=60)
    admin.close()
    for topic, items in poisoned.items():
        consumers = {g for g, topics in groups.items() if topic in topics}
        dlq = KafkaConsumer(dead_letter_topic(topic), bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                            consumer_timeout_ms=2000, group_id=None)
        dead = {(r.key.decode(), dict(r.headers)["dlq_consumer"].decode()) for r in dlq
                if dict(r.headers).get("dlq_error")}
        dlq.close()
        for event_id, _, _ in items:
            assert {(event_id, c) for c in consumers} <= dead, (topic, event_id)
