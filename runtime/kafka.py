"""kafka-python clients, tuned as DESIGN.md says for the local broker (all values from settings)."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

TOPICS = (
    "identity.tenants.v1",
    "catalog.offers.v1",
    "catalog.providers.v1",
    "matching.demands.v1",
    "matching.matches.v1",
    "notifications.deliveries.v1",
)

# Topics whose events carry the aggregate's full state keyed by its id: a consumer applies only an
# event newer (higher ``ce_sequence``) than the last it applied for that key. Matches and deliveries
# are keyed by their demand / delivery but describe one pair each, so they are not in this list: their
# consumer orders each pair's events itself (apply_if_newer; notifications.consumers.in_match_order).
STATE_TOPICS = frozenset({
    "identity.tenants.v1", "catalog.offers.v1", "catalog.providers.v1", "matching.demands.v1",
})

# The largest record the outbox accepts: below Kafka's default message.max.bytes (1 048 588) and the
# producer's max_request_size (1 MiB), leaving room for the batch framing.
MAX_EVENT_BYTES = 1_000_000


def record_size(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """A record's bytes on the wire, over-estimated by the framing of a one-record batch."""
    return 100 + len(key) + len(value) + sum(len(k) + len(v) + 10 for k, v in headers)


# How soon a client sees a topic's partitions change (default 5 min): a topic recreated after a broker
# lost its state may have more partitions than the client first saw, and those would go unread.
METADATA_MAX_AGE_MS = 10_000


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def connection_options(settings: ServiceSettings) -> dict:
    """How to reach and authenticate at the brokers: plain locally, TLS and SCRAM in production."""
    options: dict = {"bootstrap_servers": settings.kafka_bootstrap,
                     "security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_username,
                       sasl_plain_password=settings.kafka_password)
    if settings.kafka_security_protocol.endswith("SSL") and settings.kafka_ssl_cafile:
        options["ssl_cafile"] = settings.kafka_ssl_cafile
    return options


def create_producer(settings: ServiceSettings) -> KafkaProducer:
    # One request in flight keeps an aggregate's events in order when the client retries.
    return KafkaProducer(
        **connection_options(settings),
        client_id=f"{settings.service}-producer",
        acks="all",
        retries=5,
        max_in_flight_requests_per_connection=1,
        linger_ms=2,
        request_timeout_ms=10_000,
        # Fail a send within seconds while the broker is away (default 60 s): the relay retries anyway.
        max_block_ms=5_000,
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


def create_consumer(settings: ServiceSettings, group_id: str, topics: list[str]) -> KafkaConsumer:
    return KafkaConsumer(
        *topics,
        **connection_options(settings),
        client_id=f"{group_id}-consumer",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=100,
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


def ensure_topics(bootstrap: str, partitions: int = 3, topics: tuple[str, ...] = TOPICS) -> None:
    """Create every topic and its dead-letter twin; the local broker keeps nothing across restarts."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bildungsraum-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [t for name in topics for t in (name, dead_letter_topic(name)) if t not in existing]
        for name in wanted:
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
