"""Prometheus metrics shared by the services (served at ``/metrics``)."""

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency", ["method", "route"])
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka")
EVENTS_CONSUMED = Counter("events_consumed_total", "Events handled", ["consumer", "type", "outcome"])
