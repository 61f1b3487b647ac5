"""Kafka entrypoints of the catalog: it keeps the tenants it knows."""

from contracts import TENANTS_TOPIC
from runtime.service import ConsumerSpec
from runtime.tenancy import TENANT_HANDLERS

CONSUMERS = [ConsumerSpec(group="catalog", topics=[TENANTS_TOPIC], handlers=dict(TENANT_HANDLERS))]
