"""Deliveries and their rules: identity of a delivery, retry schedule, SMTP outcome. No I/O."""

from __future__ import annotations

import smtplib
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from runtime.models import StrictModel

# Deliveries are named by their idempotency key; the id is derived from it, so the same
# (match, recipient) can never become two rows, whichever event announced it.
_DELIVERY_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5e0f-9c7d-2b1a0e9f8d7c")

KIND_MATCH_FOUND = "match_found"


class Status(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"  # the recipient turned notifications off
    CANCELLED = "cancelled"  # the match was retracted before the mail went out


class Outcome(StrEnum):
    SENT = "sent"
    TEMPORARY_FAILURE = "temporary_failure"
    PERMANENT_FAILURE = "permanent_failure"
    SUPPRESSED = "suppressed"


def match_key(match_id: str, provider_id: str) -> str:
    return f"match:{match_id}:provider:{provider_id}"


def delivery_id_for(key: str) -> uuid.UUID:
    return uuid.uuid5(_DELIVERY_NAMESPACE, key)


def message_id_for(key: str, domain: str) -> str:
    """The idempotency key in the Message-ID, so a receiver can drop a duplicate too."""
    return f"<{key.replace(':', '.')}@{domain}>"


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before the attempt after ``attempt`` (1-based): base, 2·base, 4·base … at most cap."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class SmtpFailure:
    temporary: bool
    error: str
    code: int | None = None


def classify_smtp_error(exc: BaseException) -> SmtpFailure:
    """4xx replies and lost connections are worth another try; 5xx replies are final."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in exc.recipients.items())
        temporary = any(400 <= c < 500 for c in codes)
        return SmtpFailure(temporary, f"recipients refused: {detail}", min(codes) if codes else None)
    if isinstance(exc, smtplib.SMTPResponseException):  # sender refused, data error, other replies
        code = exc.smtp_code
        return SmtpFailure(not 500 <= code < 600, f"SMTP {code} {_text(exc.smtp_error)}", code)
    if isinstance(exc, (smtplib.SMTPException, OSError)):  # disconnected, refused, timed out
        return SmtpFailure(True, f"{type(exc).__name__}: {exc}")
    return SmtpFailure(True, f"{type(exc).__name__}: {exc}")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Preference(StrictModel):
    mode: Literal["instant", "off"]
