"""Sending one delivery, exactly once: what the Celery task runs.

Everything happens in ONE database transaction that holds the delivery's row lock: a second
worker with the same delivery (Celery redelivery, a double enqueue, a replayed event) waits on the
lock and then finds it sent. The attempt, the new status and the ``DeliverySent``/``DeliveryFailed``
event commit together. A worker killed before the commit leaves the row pending and unlocked, and
the task comes back (``task_acks_late``, ``task_reject_on_worker_lost``, or the dispatcher's sweep).

Two steps are committed on a side connection, outside that transaction: the attempt's start
(before SMTP) and its acceptance, written before DATA and committed the moment the server answers
250. A worker that dies after that commit and before the delivery's leaves "accepted" behind;
whoever takes the delivery next finishes it as sent without sending again. What remains is the
instant between the server's 250 and the COMMIT message reaching PostgreSQL (see README, "Mail
exactly once").
"""

from __future__ import annotations

import logging
import smtplib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import asyncpg
from asyncpg.transaction import Transaction

from contracts import DELIVERIES_TOPIC, DELIVERY_FAILED, DELIVERY_SENT
from runtime.db import set_tenant
from runtime.events import Event
from runtime.outbox import add_to_outbox
from runtime.tracing import continue_trace
from services.notifications import store, unsubscribe
from services.notifications.domain import (
    KIND_DIGEST,
    KIND_OFFER_ALERT,
    Choice,
    Outcome,
    SmtpFailure,
    Status,
    backoff_seconds,
    classify_smtp_error,
    concerns,
)
from services.notifications.mail import (
    Branding,
    Envelope,
    build_digest_mail,
    build_match_mail,
    build_offer_alert_mail,
)
from services.notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

SOURCE = "notifications"
# A task copy that arrives before its delivery is due (a duplicate of a scheduled retry) leaves it
# alone; the scheduled copy runs a little after the due time.
NOT_DUE_SLACK = timedelta(seconds=0.25)
ETA_MARGIN_SECONDS = 0.5


@dataclass(frozen=True)
class Result:
    status: str  # sent | failed | suppressed | digested | retry | done | not_due | missing
    retry_in: float | None = None  # the task re-queues itself with this countdown


class SmtpSender:
    """One SMTP connection per worker process, kept open across mails (connecting, EHLO and TLS
    cost more than a small mail). Checked with NOOP after a pause; dropped after any error that
    may leave it in an unknown state."""

    def __init__(self, settings: NotificationsSettings) -> None:
        self._settings = settings
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0

    def send(self, message: EmailMessage, recipients: list[str]) -> dict:
        """One SMTP transaction. Returns the recipients the server refused (others accepted)."""
        reused = self._smtp is not None
        try:
            return self._send_once(message, recipients)
        except smtplib.SMTPServerDisconnected:
            if not reused:
                raise
            # The server dropped an idle connection we still held: nothing was accepted; once more.
            return self._send_once(message, recipients)

    def _send_once(self, message: EmailMessage, recipients: list[str]) -> dict:
        smtp = self._connection()
        try:
            refused = smtp.send_message(message, from_addr=self._settings.envelope_from, to_addrs=recipients)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:  # the server is closing the connection
                self.close()
            raise
        except BaseException:
            self.close()
            raise
        self._last_used = time.monotonic()
        return refused

    def _connection(self) -> smtplib.SMTP:
        s = self._settings
        if self._smtp is not None and time.monotonic() - self._last_used > s.smtp_idle_check_seconds:
            try:
                if self._smtp.noop()[0] != 250:
                    self.close()
            except (smtplib.SMTPException, OSError):
                self.close()
        if self._smtp is None:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            try:
                smtp.ehlo()
                if s.smtp_starttls:
                    smtp.starttls()
                    smtp.ehlo()
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password or "")
            except BaseException:
                smtp.close()
                raise
            self._smtp = smtp
        return self._smtp

    def close(self) -> None:
        if self._smtp is None:
            return
        smtp, self._smtp = self._smtp, None
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


class AcceptedMarks:
    """Where a worker notes that the SMTP server took a delivery's mail when PostgreSQL went away
    before "accepted" was committed there: the task's retry, once the database is back, finds the
    note and records the delivery as sent instead of sending it again. Redis, the Celery broker: the
    retry cannot run without it either. Kept a week, longer than any retry waits."""

    TTL_SECONDS = 7 * 24 * 3600

    def __init__(self, redis_url: str) -> None:
        from redis.asyncio import Redis

        # bounded waits: a hung Redis must not hold the delivery's row lock
        self._redis = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    @staticmethod
    def _key(delivery_id: uuid.UUID) -> str:
        return f"notifications:accepted:{delivery_id}"

    async def remember(self, delivery_id: uuid.UUID, attempt: int) -> None:
        await self._redis.set(self._key(delivery_id), attempt, ex=self.TTL_SECONDS)

    async def recall(self, delivery_id: uuid.UUID) -> int | None:
        attempt = await self._redis.get(self._key(delivery_id))
        return int(attempt) if attempt is not None else None

    async def close(self) -> None:
        await self._redis.aclose()


def _delivery_state(row: asyncpg.Record) -> dict:
    subject = row["match_id"] or row["id"]
    return {
        "id": str(row["id"]),
        "tenant": row["tenant_id"],
        "kind": row["kind"],
        "subject_id": str(subject),
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
    settings: NotificationsSettings, pool: asyncpg.Pool, sender: SmtpSender, delivery_id: uuid.UUID,
    tenant_id: str | None = None, *, now: datetime | None = None, marks: AcceptedMarks | None = None,
) -> Result:
    async with pool.acquire() as conn, conn.transaction():
        # Not waiting for this commit's flush to disk: lost in a PostgreSQL crash, it is done again on
        # the next try, and the mail does not go twice, because the "accepted" mark is committed
        # (and flushed) on its own the moment the server answers 250.
        await conn.execute("SET LOCAL synchronous_commit = off")
        return await _deliver_locked(conn, pool, settings, sender, delivery_id, tenant_id, now or datetime.now(UTC),
                                     marks)


async def _deliver_locked(
    conn: asyncpg.Connection, pool: asyncpg.Pool, settings: NotificationsSettings, sender: SmtpSender,
    delivery_id: uuid.UUID, tenant_id: str | None, now: datetime, marks: AcceptedMarks | None,
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
    continue_trace(d["traceparent"])
    if d["accepted_attempt"] is not None:
        # The server took this mail and the worker died before committing: done, not sent again.
        return await _sent(conn, d, d["accepted_attempt"],
                           "vom Mailserver angenommen; Abschluss nach Neustart des Workers")
    if marks is not None and (taken := await marks.recall(d["id"])) is not None:
        # The server took it and PostgreSQL went away before "accepted" was durable: done, not sent again.
        # (Asked whether or not an attempt is logged as started: that log line is not flushed at once.)
        return await _sent(conn, d, taken, "vom Mailserver angenommen; Abschluss nach Ausfall der Datenbank")
    if d["next_attempt_at"] > d["db_now"] + NOT_DUE_SLACK:
        return Result("not_due")
    if d["interrupted"]:
        await store.mark_interrupted(conn, d["id"])
    attempt = d["next_attempt"]

    composed = await _compose(conn, settings, d, attempt, now)
    if isinstance(composed, Result):
        return composed
    message = composed
    async with pool.acquire() as side:
        accepted = await _log_start(side, d, attempt)
        try:
            # On this thread, not a helper thread: the COMMIT of "accepted" below then leaves in the
            # same breath as the server's 250 is read. Handed back from a thread, it waited for this
            # loop to be woken and scheduled, milliseconds on two busy cores, and a worker killed
            # then sent the mail again (make chaos, 2026-12-07 11:52 UTC). The loop has nothing else
            # to do meanwhile: a worker process delivers one delivery at a time.
            refused = sender.send(message, [d["recipient"]])
        except Exception as exc:  # noqa: BLE001 - every failure is classified and logged
            await accepted.rollback()
            failure = classify_smtp_error(exc)
            log.warning("sending delivery %s failed: %s", d["id"], failure.error,
                        extra={"delivery_id": str(d["id"]), "attempt": attempt, "temporary": failure.temporary})
            if failure.temporary:
                return await _temporary(conn, settings, d, attempt, failure)
            return await _fail(conn, d, attempt, failure)
        try:
            await accepted.commit()
        except BaseException:
            if marks is not None:  # the server has the mail; the retry must learn it somewhere
                try:
                    await marks.remember(d["id"], attempt)
                except Exception:  # both stores gone: the retry may send it again (README)
                    log.exception("delivery %s was accepted by the SMTP server but could be recorded nowhere",
                                  d["id"])
            raise
    note = "; ".join(f"{rcpt}: {code} {msg!r}" for rcpt, (code, msg) in refused.items()) or None
    return await _sent(conn, d, attempt, note)


async def _compose(conn: asyncpg.Connection, settings: NotificationsSettings, d: asyncpg.Record, attempt: int,
                   now: datetime) -> EmailMessage | Result:
    """The mail for this delivery, or what happens instead (suppressed, gathered for a digest)."""
    common = {"portal_base_url": settings.portal_base_url, "mail_from": settings.mail_from, "now": now}
    preference = await store.get_preference(conn, d["provider_id"]) if d["owner_kind"] == "provider" else None
    choice = await _choice(conn, d, preference)
    if d["kind"] == KIND_DIGEST:
        if choice.mode == "off":
            return await _suppress(conn, d, attempt, "Benachrichtigungen abbestellt")
        matches = await store.digest_matches(conn, d["id"])
        if not matches:
            return await _finish_quietly(conn, d, Status.CANCELLED, "nichts mehr zu berichten")
        return build_digest_mail(await _envelope(conn, settings, d), matches, greeting_name=await _greeting(conn, d),
                                 period_label=_period_label(d["period"]), for_employer=d["owner_kind"] == "employer",
                                 **common)
    if d["kind"] == "match_found" and preference \
            and not concerns(preference["offer_ids"], preference["topics"], d["payload"]):
        return await _suppress(conn, d, attempt, "nicht in den gewählten Angeboten oder Themen")
    if choice.mode == "off":
        return await _suppress(conn, d, attempt, "Benachrichtigungen abbestellt")
    if choice.mode in ("daily", "weekly"):
        await store.add_digest_item(conn, d, d["owner_kind"], d["owner_id"], d["recipient"])
        return await _finish_quietly(conn, d, Status.DIGESTED, None)
    envelope = await _envelope(conn, settings, d)
    if d["kind"] == KIND_OFFER_ALERT:
        return build_offer_alert_mail(envelope, d["payload"], **common)
    demand_brand = await store.branding(conn, d["demand_tenant"]) if d["demand_tenant"] else None
    return build_match_mail(envelope, d["payload"], greeting_name=await _greeting(conn, d),
                            demand_network=demand_brand["name"] if demand_brand else None, **common)


async def _choice(conn: asyncpg.Connection, d: asyncpg.Record, preference: asyncpg.Record | None) -> Choice:
    """The address's own choice, else its owner's default (a provider's ``preference``, without one
    instant; employers opted in per address, so no row means off)."""
    for row in await store.address_choices(conn, d["owner_kind"], d["owner_id"]):
        if row["address"] == d["recipient"]:
            return Choice(row["mode"], row["digest_hour"], row["digest_weekday"])
    if d["owner_kind"] != "provider":
        return Choice("off")
    if preference is None:
        return Choice("instant")
    return Choice(preference["mode"], preference["digest_hour"], preference["digest_weekday"])


async def _greeting(conn: asyncpg.Connection, d: asyncpg.Record) -> str | None:
    if d["owner_kind"] != "provider" or d["provider_id"] is None:
        return None
    provider = await store.get_provider(conn, d["provider_id"])
    return provider["name"] if provider else None


async def _envelope(conn: asyncpg.Connection, settings: NotificationsSettings, d: asyncpg.Record) -> Envelope:
    token = unsubscribe.sign(settings.signing_secret(), unsubscribe.Recipient(
        d["tenant_id"], d["owner_kind"], d["owner_id"], d["recipient"]))
    headers = {}
    if d["match_id"]:
        headers = {"X-Bildungsraum-Match": str(d["match_id"]), "X-Bildungsraum-Offer": str(d["offer_id"]),
                   "X-Bildungsraum-Demand": str(d["demand_id"])}
    return Envelope(delivery_id=str(d["id"]), message_id=d["message_id"], recipients=[d["recipient"]],
                    branding=await tenant_branding(conn, settings, d["tenant_id"]),
                    unsubscribe_url=unsubscribe.unsubscribe_url(settings.public_base_url, token), headers=headers)


async def tenant_branding(conn: asyncpg.Connection, settings: NotificationsSettings, tenant: str) -> Branding:
    """The network's name, logo, imprint and privacy pages; where the network set none, the
    portal's pages of that network."""
    row = await store.branding(conn, tenant)
    portal = f"{settings.portal_base_url.rstrip('/')}/{tenant}"
    return Branding(
        network_name=row["name"] if row else "Bildungsraum",
        logo_url=row["logo_url"] if row else None,
        imprint_url=(row["imprint_url"] if row else None) or f"{portal}/impressum",
        privacy_url=(row["privacy_url"] if row else None) or f"{portal}/datenschutz",
    )


def _period_label(period: str | None) -> str:
    if period and "-W" in period:
        year, week = period.split("-W")
        return f"In der Kalenderwoche {int(week)}/{year}"
    try:
        return f"Am {datetime.fromisoformat(period or '').strftime('%d.%m.%Y')}"
    except ValueError:
        return "Zuletzt"


async def _log_start(side: asyncpg.Connection, d: asyncpg.Record, attempt: int) -> Transaction:
    """On a second connection, outside the delivery's transaction: the attempt is committed as
    started before the mail goes out (in the log even if this worker dies mid-send), and "accepted"
    is written at once in a transaction left open. The caller commits it the moment the server
    answers 250, so what stands between that answer and "accepted" being durable is one COMMIT
    message to PostgreSQL, not a connection, a statement and a commit."""
    async with side.transaction():
        await side.execute("SET LOCAL synchronous_commit = off")  # a log line: lost in a crash, nothing else is
        await set_tenant(side, d["tenant_id"])
        await store.start_attempt(side, d, attempt)
    accepted = side.transaction()
    await accepted.start()
    await set_tenant(side, d["tenant_id"])
    await store.mark_accepted(side, d["id"], attempt)
    return accepted


async def _sent(conn: asyncpg.Connection, d: asyncpg.Record, attempt: int, note: str | None) -> Result:
    await store.record_attempt(conn, d, attempt, Outcome.SENT, note)
    row = await store.finish_delivery(conn, d["id"], status=Status.SENT, attempts=attempt,
                                      recipient=d["recipient"], error=note)
    await _publish(conn, row)
    log.info("delivery %s sent", d["id"], extra={"delivery_id": str(d["id"]), "attempt": attempt})
    return Result("sent")


async def _suppress(conn: asyncpg.Connection, d: asyncpg.Record, attempt: int, why: str) -> Result:
    await store.record_attempt(conn, d, attempt, Outcome.SUPPRESSED, why)
    await store.finish_delivery(conn, d["id"], status=Status.SUPPRESSED, attempts=attempt,
                                recipient=d["recipient"], error=None)
    return Result("suppressed")


async def _finish_quietly(conn: asyncpg.Connection, d: asyncpg.Record, status: str, why: str | None) -> Result:
    """No mail of its own and no attempt: gathered for a digest, or a digest left empty."""
    await store.finish_delivery(conn, d["id"], status=status, attempts=d["attempts"], recipient=d["recipient"],
                                error=why)
    return Result(status)


async def _temporary(
    conn: asyncpg.Connection, settings: NotificationsSettings, d: asyncpg.Record, attempt: int, failure: SmtpFailure,
) -> Result:
    await store.record_attempt(conn, d, attempt, Outcome.TEMPORARY_FAILURE, failure.error, failure.code)
    if attempt >= settings.max_attempts:
        return await _fail(conn, d, attempt,
                           SmtpFailure(False, f"aufgegeben nach {attempt} Versuchen: {failure.error}", failure.code),
                           record=False)
    delay = backoff_seconds(attempt, settings.retry_base_seconds, settings.retry_max_seconds)
    # A short wait is a Celery countdown; a long one is left to the dispatcher, because the Redis
    # transport hands a task held longer than the visibility timeout to another worker.
    by_task = delay + ETA_MARGIN_SECONDS < settings.celery_visibility_timeout / 2
    await store.postpone_delivery(conn, d["id"], attempts=attempt, recipient=d["recipient"], error=failure.error,
                                  delay_seconds=delay, requeued_by_task=by_task)
    return Result("retry", retry_in=delay + ETA_MARGIN_SECONDS if by_task else None)


async def _fail(
    conn: asyncpg.Connection, d: asyncpg.Record, attempt: int, failure: SmtpFailure, *, record: bool = True,
) -> Result:
    if record:
        await store.record_attempt(conn, d, attempt, Outcome.PERMANENT_FAILURE, failure.error, failure.code)
    row = await store.finish_delivery(conn, d["id"], status=Status.FAILED, attempts=attempt,
                                      recipient=d["recipient"], error=failure.error)
    await _publish(conn, row)
    log.error("delivery %s failed permanently: %s", d["id"], failure.error, extra={"delivery_id": str(d["id"])})
    return Result("failed")

