"""A consumer that receives an event it cannot read or that fails its schema sends it to the
dead-letter topic with the reason, and goes on with the next one."""

from __future__ import annotations

import uuid

from kafka import KafkaConsumer, KafkaProducer

from contracts import OFFER_PUBLISHED, OFFERS_TOPIC
from runtime.kafka import dead_letter_topic
from tests.platform import Platform, demand_body, offer_body, wait_until


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
        offer = api.post("/v1/offers", json=offer_body(provider["id"])).json()
    with platform.client("matching", "lueneburg-counselor") as api:
        demand = api.post("/v1/demands", json=demand_body()).json()
        wait_until("the later offer matched", lambda: any(
            m["offer_id"] == offer["id"] for m in api.get(f"/v1/demands/{demand['id']}/matches").json()["items"]))
