"""Kafka entrypoints of matching: offers into its read model (and re-matching), tenants known."""

from contracts import OFFER_PUBLISHED, OFFER_UPDATED, OFFER_WITHDRAWN, OFFERS_TOPIC, TENANTS_TOPIC
from runtime.service import ConsumerSpec
from runtime.tenancy import TENANT_HANDLERS
from services.matching.handlers import offer_changed

CONSUMERS = [
    ConsumerSpec(
        group="matching",
        topics=[OFFERS_TOPIC, TENANTS_TOPIC],
        handlers={OFFER_PUBLISHED: offer_changed, OFFER_UPDATED: offer_changed, OFFER_WITHDRAWN: offer_changed,
                  **TENANT_HANDLERS},
    )
]
