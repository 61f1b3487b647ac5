"""Prometheus metrics shared by the services (served at ``/metrics``)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency", ["method", "route"])
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka")
EVENTS_CONSUMED = Counter("events_consumed_total", "Events handled", ["consumer", "type", "outcome"])
EVENTS_RETRIED = Counter("events_retried_total", "Event handling retried", ["consumer", "reason"])
OUTBOX_SEND_FAILURES = Counter("outbox_send_failures_total", "Outbox rows the broker did not take", ["topic"])
OUTBOX_PENDING = Gauge("outbox_pending_rows", "Outbox rows neither sent nor skipped")
# The alert rules watch these two: a row that cannot be sent holds back its aggregate's later events.
OUTBOX_OLDEST_PENDING_AGE = Gauge("outbox_oldest_pending_age_seconds", "Age of the oldest pending outbox row")
OUTBOX_STUCK = Gauge("outbox_stuck_rows", "Pending outbox rows that failed at least 3 times")
# Measured from the outbox table by the process that relays it (alerts: deploy/k8s/components/monitoring).
OUTBOX_RECENT = Gauge("outbox_events_last_hour", "Events written to the outbox in the last hour", ["event_type"])
