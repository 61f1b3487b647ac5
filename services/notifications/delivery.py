"""Sending one delivery, exactly once: what the Celery task runs.

Everything happens in ONE database transaction that holds the delivery's row lock: a second
worker with the same delivery (Celery redelivery, a double enqueue, a replayed event) waits on the
lock and then finds it sent. The attempt, the new status and the ``DeliverySent``/``DeliveryFailed``
event commit together. A worker killed before the commit leaves the row pending and unlocked, and
the task comes back (``task_acks_late``, ``task_reject_on_worker_lost``, or the dispatcher's sweep).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import asyncpg

from contracts import DELIVERIES_TOPIC, DELIVERY_FAILED, DELIVERY_SENT
from runtime.db import set_tenant
from runtime.events import Event
from runtime.outbox import add_to_outbox
from runtime.tracing import continue_trace
from services.notifications import store
from services.notifications.domain import (
    Outcome,
    SmtpFailure,
    Status,
    backoff_seconds,
    classify_smtp_error,
)
from services.notifications.mail import MatchMail, build_match_mail, unsubscribe_url
from services.notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

SOURCE = "notifications"
# A task copy that arrives before its delivery is due (a duplicate of a scheduled retry) leaves it
# alone; the scheduled copy runs a little after the due time.
NOT_DUE_SLACK = timedelta(seconds=0.25)
ETA_MARGIN_SECONDS = 0.5


@dataclass(frozen=True)
class Result:
    status: str  # sent | failed | suppressed | retry | done | not_due | missing
    retry_in: float | None = None  # the task re-queues itself with this countdown


def send_mail(settings: NotificationsSettings, message: EmailMessage, recipients: list[str]) -> dict:
    """One SMTP transaction. Returns the recipients the server refused (others accepted).
    Once the server has accepted the message, a failing QUIT does not make it a failure."""
    smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds)
    try:
        smtp.ehlo()
        if settings.smtp_starttls:
            smtp.starttls()
            smtp.ehlo()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        return smtp.send_message(message, from_addr=settings.envelope_from, to_addrs=recipients)
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _delivery_state(row: asyncpg.Record) -> dict:
    return {
        "id": str(row["id"]),
        "tenant": row["tenant_id"],
        "kind": row["kind"],
        "subject_id": str(row["match_id"]),
        "recipient": row["recipient"] or "",
        "status": row["status"],
        "attempts": row["attempts"],
        "error": row["last_error"],
        "message_id": row["message_id"],
        "at": datetime.now(UTC).isoformat(),
    }


async def _publish(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    event_type = DELIVERY_SENT if row["status"] == Status.SENT else DELIVERY_FAILED
    await add_to_outbox(conn, DELIVERIES_TOPIC, Event(event_type, SOURCE, row["tenant_id"], str(row["id"]),
                                                      _delivery_state(row)))


async def deliver(
    settings: NotificationsSettings, pool: asyncpg.Pool, delivery_id: uuid.UUID, tenant_id: str | None = None,
    *, now: datetime | None = None,
) -> Result:
    async with pool.acquire() as conn, conn.transaction():
        return await _deliver_locked(conn, pool, settings, delivery_id, tenant_id, now)


async def _deliver_locked(
    conn: asyncpg.Connection, pool: asyncpg.Pool, settings: NotificationsSettings, delivery_id: uuid.UUID,
    tenant_id: str | None, now: datetime | None,
) -> Result:
    tenant = tenant_id or await store.delivery_tenant(conn, delivery_id)
    if tenant is None:
        return Result("missing")
    await set_tenant(conn, tenant)
    d = await store.lock_delivery(conn, delivery_id)
    if d is None:
        return Result("missing")
    if d["status"] != Status.PENDING:
        return Result("done")
    if d["next_attempt_at"] > d["db_now"] + NOT_DUE_SLACK:
        return Result("not_due")
    continue_trace(d["traceparent"])
    attempt = await store.next_attempt(conn, d["id"])

    provider = await store.get_provider(conn, d["provider_id"])
    if provider is None:
        # The match came before the provider's registration: wait for it (its arrival makes
        # the delivery due at once, see consumers.on_provider).
        return await _temporary(conn, settings, d, attempt, None,
                                SmtpFailure(True, "Anbieter noch nicht bekannt (catalog.providers.v1)"))
    recipients = list(provider["emails"])
    recipient = ", ".join(recipients)
    preference = await store.ensure_preference(conn, provider["id"], d["tenant_id"])
    if preference["mode"] == "off":
        await store.record_attempt(conn, d, attempt, Outcome.SUPPRESSED, "Benachrichtigungen abbestellt")
        await store.finish_delivery(conn, d["id"], status=Status.SUPPRESSED, attempts=attempt,
                                    recipient=recipient, error=None)
        return Result("suppressed")

    message = build_match_mail(
        MatchMail(
            delivery_id=str(d["id"]),
            message_id=d["message_id"],
            match=d["payload"],
            provider_name=provider["name"],
            recipients=recipients,
            network_name=await store.network_name(conn, d["demand_tenant"]),
            unsubscribe_url=unsubscribe_url(settings.public_base_url, preference["unsubscribe_token"]),
        ),
        settings.mail_from,
        now or datetime.now(UTC),
    )
    await _log_start(pool, d, attempt)
    try:
        refused = await asyncio.to_thread(send_mail, settings, message, recipients)
    except Exception as exc:  # noqa: BLE001 - every failure is classified and logged
        failure = classify_smtp_error(exc)
        log.warning("sending delivery %s failed: %s", d["id"], failure.error,
                    extra={"delivery_id": str(d["id"]), "attempt": attempt, "temporary": failure.temporary})
        if failure.temporary:
            return await _temporary(conn, settings, d, attempt, recipient, failure)
        return await _fail(conn, d, attempt, recipient, failure)

    note = "; ".join(f"{rcpt}: {code} {msg!r}" for rcpt, (code, msg) in refused.items()) or None
    await store.record_attempt(conn, d, attempt, Outcome.SENT, note)
    row = await store.finish_delivery(conn, d["id"], status=Status.SENT, attempts=attempt,
                                      recipient=recipient, error=note)
    await _publish(conn, row)
    log.info("delivery %s sent", d["id"], extra={"delivery_id": str(d["id"]), "attempt": attempt})
    return Result("sent")


async def _log_start(pool: asyncpg.Pool, d: asyncpg.Record, attempt: int) -> None:
    """The attempt is in the log before the mail goes out, even if this worker dies mid-send:
    committed on a second connection, outside the delivery's transaction."""
    async with pool.acquire() as side, side.transaction():
        await set_tenant(side, d["tenant_id"])
        await store.start_attempt(side, d, attempt)


async def _temporary(
    conn: asyncpg.Connection, settings: NotificationsSettings, d: asyncpg.Record, attempt: int,
    recipient: str | None, failure: SmtpFailure,
) -> Result:
    await store.record_attempt(conn, d, attempt, Outcome.TEMPORARY_FAILURE, failure.error, failure.code)
    if attempt >= settings.max_attempts:
        return await _fail(conn, d, attempt, recipient,
                           SmtpFailure(False, f"aufgegeben nach {attempt} Versuchen: {failure.error}", failure.code),
                           record=False)
    delay = backoff_seconds(attempt, settings.retry_base_seconds, settings.retry_max_seconds)
    # A short wait is a Celery countdown; a long one is left to the dispatcher, because the Redis
    # transport hands a task held longer than the visibility timeout to another worker.
    by_task = delay + ETA_MARGIN_SECONDS < settings.celery_visibility_timeout / 2
    await store.postpone_delivery(conn, d["id"], attempts=attempt, recipient=recipient, error=failure.error,
                                  delay_seconds=delay, requeued_by_task=by_task)
    return Result("retry", retry_in=delay + ETA_MARGIN_SECONDS if by_task else None)


async def _fail(
    conn: asyncpg.Connection, d: asyncpg.Record, attempt: int, recipient: str | None, failure: SmtpFailure,
    *, record: bool = True,
) -> Result:
    if record:
        await store.record_attempt(conn, d, attempt, Outcome.PERMANENT_FAILURE, failure.error, failure.code)
    row = await store.finish_delivery(conn, d["id"], status=Status.FAILED, attempts=attempt,
                                      recipient=recipient, error=failure.error)
    await _publish(conn, row)
    log.error("delivery %s failed permanently: %s", d["id"], failure.error, extra={"delivery_id": str(d["id"])})
    return Result("failed")
