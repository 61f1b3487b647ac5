"""W3C trace context: the current ``traceparent`` travels from HTTP requests into outbox rows,
Kafka headers, consumers and Celery tasks, and every log line carries its trace id."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
current_traceparent: ContextVar[str | None] = ContextVar("traceparent", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def parse_trace_id(traceparent: str | None) -> str | None:
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if not match or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def continue_trace(incoming: str | None) -> str:
    """A child span of ``incoming`` when it is valid, else a new trace; set as current."""
    trace_id = parse_trace_id(incoming)
    traceparent = new_traceparent(trace_id)
    current_traceparent.set(traceparent)
    return traceparent


def current_trace_id() -> str | None:
    return parse_trace_id(current_traceparent.get())
