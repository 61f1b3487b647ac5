"""Kafka entrypoints of matching: offers into its read model (and reverse matching), who acts for
which provider, tenants known."""

from contracts import (
    OFFER_PUBLISHED,
    OFFER_UPDATED,
    OFFER_WITHDRAWN,
    OFFERS_TOPIC,
    PROVIDER_REGISTERED,
    PROVIDER_UPDATED,
    PROVIDERS_TOPIC,
    TENANTS_TOPIC,
)
from runtime.service import ConsumerSpec
from runtime.tenancy import TENANT_HANDLERS
from services.matching.handlers import offer_changed, prepare_offers, provider_changed

CONSUMERS = [
    ConsumerSpec(
        group="matching",
        topics=[OFFERS_TOPIC, PROVIDERS_TOPIC, TENANTS_TOPIC],
        handlers={OFFER_PUBLISHED: offer_changed, OFFER_UPDATED: offer_changed, OFFER_WITHDRAWN: offer_changed,
                  PROVIDER_REGISTERED: provider_changed, PROVIDER_UPDATED: provider_changed,
                  **TENANT_HANDLERS},
        prepare=prepare_offers,
    )
]
