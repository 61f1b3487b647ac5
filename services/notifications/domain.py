"""Deliveries and their rules: identity of a delivery, retry schedule, SMTP outcome. No I/O."""

from __future__ import annotations

import random
import smtplib
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import EmailStr, Field

from runtime.models import StrictModel

# Deliveries are named by their idempotency key; the id is derived from it, so the same
# (match, recipient) can never become two rows, whichever event announced it.
_DELIVERY_NAMESPACE = uuid.UUID("6f1d3c2e-8a4b-5e0f-9c7d-2b1a0e9f8d7c")

KIND_MATCH_FOUND = "match_found"
KIND_DIGEST = "digest"
KIND_OFFER_ALERT = "offer_alert"


class Status(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"  # the recipient turned notifications off
    CANCELLED = "cancelled"  # the match was retracted or the demand closed before the mail went out
    DIGESTED = "digested"  # waits in the recipients' digests, no mail of its own


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # the SMTP server took it; the delivery's commit is still to come
    SENT = "sent"
    TEMPORARY_FAILURE = "temporary_failure"
    PERMANENT_FAILURE = "permanent_failure"
    SUPPRESSED = "suppressed"


def match_key(match_id: str, provider_id: str, address: str) -> str:
    """One delivery per match and recipient address (of the provider the match concerns)."""
    return f"match:{match_id}:provider:{provider_id}:to:{address.lower()}"


def digest_key(owner_kind: str, owner_id: str, address: str, period: str) -> str:
    return f"digest:{owner_kind}:{owner_id}:{address}:{period}"


def alert_key(match_id: str, firm: str) -> str:
    return f"alert:{match_id}:employer:{firm}"


def delivery_id_for(key: str) -> uuid.UUID:
    return uuid.uuid5(_DELIVERY_NAMESPACE, key)


def message_id_for(key: str, domain: str) -> str:
    """The idempotency key in the Message-ID, so a receiver can drop a duplicate too. A key that
    holds an address (a digest's) is named by its derived id instead: no '@' in the left part."""
    if "@" in key:
        return f"<{key.split(':', 1)[0]}.{delivery_id_for(key)}@{domain}>"
    return f"<{key.replace(':', '.')}@{domain}>"


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before the attempt after ``attempt`` (1-based): base, 2·base, 4·base … at most cap,
    each drawn from its upper half at random ("equal jitter"), so deliveries that failed together
    (a mail server restarting) do not all come back at the same moment."""
    ceiling = float(min(cap, base * 2 ** max(0, attempt - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


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


Mode = Literal["instant", "daily", "weekly", "off"]


class AddressPreference(StrictModel):
    """One contact address's own choice; it overrides the owner's default."""

    address: EmailStr
    mode: Mode
    digest_hour: int = Field(default=7, ge=0, le=23, description="Europe/Berlin hour of a daily or weekly digest")
    digest_weekday: int = Field(default=1, ge=1, le=7, description="weekly digest: 1 = Monday … 7 = Sunday")


class Preference(StrictModel):
    """A provider's notifications: how (instant, daily or weekly digest, off) and about what."""

    mode: Mode
    digest_hour: int = Field(default=7, ge=0, le=23, description="Europe/Berlin hour of a daily or weekly digest")
    digest_weekday: int = Field(default=1, ge=1, le=7, description="weekly digest: 1 = Monday … 7 = Sunday")
    offer_ids: list[uuid.UUID] = Field(default_factory=list, max_length=500,
                                       description="only about these offers (empty: all of the provider's)")
    topics: list[Annotated[str, Field(min_length=2, max_length=100)]] = Field(
        default_factory=list, max_length=50, description="only demand mentioning one of these (empty: any)")
    addresses: list[AddressPreference] = Field(default_factory=list, max_length=50,
                                               description="per contact address, overriding the above")


class EmployerAlert(StrictModel):
    """An employer's opt-in to mail about good new offers for its open demand."""

    address: EmailStr
    mode: Mode
    digest_hour: int = Field(default=7, ge=0, le=23)
    digest_weekday: int = Field(default=1, ge=1, le=7)
    min_score: float = Field(default=0.0, ge=0.0, le=1.0, description="only offers at least this relevant")


@dataclass(frozen=True)
class Choice:
    """The effective choice for one address."""

    mode: str
    digest_hour: int = 7
    digest_weekday: int = 1


def effective_choice(default: Choice, override: Choice | None) -> Choice:
    return override or default


def concerns(offer_ids: list, topics: list[str], match: dict) -> bool:
    """Whether a match falls within what the recipient chose to hear about."""
    offer = match.get("offer") or {}
    if offer_ids and offer.get("id") not in {str(o) for o in offer_ids}:
        return False
    if not topics:
        return True
    demand = match.get("demand") or {}
    haystack = " ".join([demand.get("title", ""), demand.get("description", ""), *demand.get("skills", []),
                         offer.get("title", "")]).casefold()
    return any(topic.casefold() in haystack for topic in topics)


BERLIN = ZoneInfo("Europe/Berlin")


def digest_period(choice: Choice, now: datetime) -> str | None:
    """The period whose digest is due at ``now`` (the chosen hour in Berlin has come), else None.
    The period names the digest: one per recipient and period, however often the beat runs."""
    local = now.astimezone(BERLIN)
    if local.hour < choice.digest_hour:
        return None
    if choice.mode == "daily":
        return local.date().isoformat()
    if choice.mode == "weekly":
        if local.isoweekday() < choice.digest_weekday:
            return None
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return None
