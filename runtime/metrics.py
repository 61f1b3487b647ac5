"""Prometheus metrics shared by the services (served at ``/metrics``)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency", ["method", "route"])
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka")
EVENTS_CONSUMED = Counter("events_consumed_total", "Events handled", ["consumer", "type", "outcome"])
# Measured from the outbox table by the process that relays it (alerts: deploy/k8s/components/monitoring).
OUTBOX_UNSENT = Gauge("outbox_unsent_rows", "Outbox rows not yet published")
OUTBOX_OLDEST_UNSENT = Gauge("outbox_oldest_unsent_seconds", "Age of the oldest unpublished outbox row")
OUTBOX_RECENT = Gauge("outbox_events_last_hour", "Events written to the outbox in the last hour", ["event_type"])
