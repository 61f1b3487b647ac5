from __future__ import annotations

import pytest

from contracts import OFFER_PUBLISHED, TENANT_CREATED
from runtime.events import Event, InvalidEvent, known_event_types, validate
from runtime.tracing import continue_trace, parse_trace_id


def test_envelope_round_trips_through_kafka_headers() -> None:
    event = Event(TENANT_CREATED, "identity", "harz", "harz", {"id": "harz", "name": "Harz", "status": "active"})
    headers = dict(event.headers())
    assert headers["ce_specversion"] == b"1.0" and headers["content-type"] == b"application/json"
    back = Event.from_record(event.key.encode(), event.value(), event.headers())
    assert back == event
    validate(back)


def test_invalid_payload_names_every_broken_field() -> None:
    event = Event(OFFER_PUBLISHED, "catalog", "harz", "k", {"id": "not-a-uuid", "title": ""})
    with pytest.raises(InvalidEvent) as info:
        validate(event)
    assert "/title" in str(info.value) and '"provider_id" is a required property' in str(info.value)


def test_unreadable_records_are_invalid_events() -> None:
    headers = Event(TENANT_CREATED, "identity", "x", "x", {}).headers()
    with pytest.raises(InvalidEvent, match="not JSON"):
        Event.from_record(b"k", b"\xff{", headers)
    with pytest.raises(InvalidEvent, match="JSON object"):
        Event.from_record(b"k", b"[1]", headers)
    with pytest.raises(InvalidEvent, match="missing CloudEvents headers"):
        Event.from_record(b"k", b"{}", [("ce_id", b"1")])
    with pytest.raises(InvalidEvent, match="unknown event type"):
        validate(Event("de.bildungsraum.nothing.v9", "x", "x", "x", {}))
    # valid Kafka that kafka-python does not send but Java clients do: a header without a value (read
    # as absent), and any bytes as the key. Before, each stopped the consumer for good.
    with pytest.raises(InvalidEvent, match="ce_tenant"):
        Event.from_record(b"k", b"{}", [(k, None if k == "ce_tenant" else v) for k, v in headers])
    with pytest.raises(InvalidEvent, match="key is not UTF-8"):
        Event.from_record(b"\xff\xfe", b"{}", headers)


def test_every_event_type_has_a_schema_and_a_constant() -> None:
    import contracts

    constants = {v for k, v in vars(contracts).items() if k.isupper() and v.startswith("de.bildungsraum.")}
    assert constants == known_event_types()


def test_trace_context_continues_or_starts() -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_trace_id(continue_trace(incoming)) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parse_trace_id(continue_trace("garbage")) not in (None, "4bf92f3577b34da6a3ce929d0e0e4736")


def test_a_payload_nested_too_deep_is_an_invalid_event_not_a_crash() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"t"), ("ce_type", b"t"),
               ("ce_tenant", b"t")]
    with pytest.raises(InvalidEvent, match="not JSON"):
        Event.from_record(b"k", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, headers)
    with pytest.raises(InvalidEvent, match="ce_sequence"):
        Event.from_record(b"k", b"{}", [*headers, ("ce_sequence", "²".encode())])
