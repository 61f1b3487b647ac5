"""The Celery app of the notifications service (Redis broker), made by a factory: importing this
module builds nothing and connects nowhere.

    python -m services.notifications.worker worker -Q notifications -c 2 --without-mingle --without-gossip
    python -m services.notifications.worker beat     # the digests; one beat, and two would do no harm

Each pool process keeps one event loop, one small database pool and one SMTP connection, made on
its first task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from datetime import UTC, datetime

import asyncpg
import redis
from celery import Celery, signals

from runtime.db import create_pool
from runtime.logs import configure_logging
from services.notifications.delivery import AcceptedMarks, SmtpSender, deliver
from services.notifications.digests import collect_digests
from services.notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

SEND_DELIVERIES = "notifications.send_deliveries"
COLLECT_DIGESTS = "notifications.collect_digests"
# Infrastructure trouble (database, network) is retried by Celery a few times; after that the
# dispatcher's sweep enqueues the still pending delivery again.
INFRA_MAX_RETRIES = 8


def create_celery(settings: NotificationsSettings) -> Celery:
    app = Celery("notifications", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged after the task ran, so a dead worker's task comes back
        task_reject_on_worker_lost=True,  # a killed pool process hands its task back at once
        worker_prefetch_multiplier=1,
        task_default_queue=settings.celery_queue,
        task_routes={name: {"queue": settings.celery_queue} for name in (SEND_DELIVERIES, COLLECT_DIGESTS)},
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # A task not acknowledged within this time is handed to another worker. It must exceed
            # the longest a task can run (SMTP timeout x a few round trips) and any countdown a task
            # sets itself: longer retry waits are the dispatcher's (see delivery._temporary).
            "visibility_timeout": settings.celery_visibility_timeout,
            # ... looked for this often (kombu's default sweep is 10 s x a throttle of 10).
            "unacked_restore_interval": settings.celery_restore_interval,
            "unacked_restore_throttle": 1,
            # A worker killed while restoring must not block restores for kombu's default 300 s.
            "unacked_mutex_expire": max(5, settings.celery_visibility_timeout),
        },
        beat_schedule={"collect-digests": {"task": COLLECT_DIGESTS, "schedule": settings.digest_check_seconds}},
        worker_hijack_root_logger=False,
    )

    @app.task(bind=True, name=SEND_DELIVERIES, max_retries=None)
    def send_deliveries(self, items: list[list[str]]) -> list[str]:
        """Each delivery in turn, each in its own transaction (a task that comes back after a
        worker died finds the ones it had done no longer pending). A delivery to try again later
        goes on as a task of its own with that countdown."""
        res = _process_resources(settings)
        statuses = []
        for n, (delivery_id, tenant_id) in enumerate(items):
            try:
                result = res.loop.run_until_complete(deliver(settings, res.pool, res.sender, uuid.UUID(delivery_id),
                                                             tenant_id, marks=res.marks))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, redis.RedisError) as exc:
                if self.request.retries >= INFRA_MAX_RETRIES:
                    raise
                log.warning("delivery %s: infrastructure error, retrying: %s", delivery_id, exc)
                raise self.retry(args=[items[n:]], exc=exc, countdown=min(30, 2 ** self.request.retries)) from exc
            if result.retry_in is not None:
                send_deliveries.apply_async(([[delivery_id, tenant_id]],), countdown=result.retry_in)
            statuses.append(result.status)
        return statuses

    @app.task(name=COLLECT_DIGESTS, expires=settings.digest_check_seconds)
    def collect(now: str | None = None) -> int:
        res = _process_resources(settings)
        at = datetime.fromisoformat(now) if now else datetime.now(UTC)
        return res.loop.run_until_complete(collect_digests(settings, res.pool, at))

    return app


class _Resources:
    def __init__(self, settings: NotificationsSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(settings, min_size=1, max_size=2))
        self.sender = SmtpSender(settings)
        self.marks = AcceptedMarks(settings.redis_url)


_resources: dict[int, _Resources] = {}


def _process_resources(settings: NotificationsSettings) -> _Resources:
    """One event loop, one small pool and one SMTP connection per worker process, made on its first
    task: a fresh loop, new PostgreSQL connections and an SMTP handshake per mail cost more than
    sending the mail."""
    pid = os.getpid()  # a forked pool process must not use its parent's connections
    if pid not in _resources:
        _resources.clear()
        _resources[pid] = _Resources(settings)
    return _resources[pid]


@signals.worker_process_shutdown.connect
def _close_smtp(**_: object) -> None:
    for resources in _resources.values():
        resources.sender.close()


@signals.setup_logging.connect
def _json_logs(loglevel=None, **_: object) -> None:
    """Worker processes log JSON lines like the services."""
    configure_logging("notifications-worker", loglevel or "INFO")


def main(argv: list[str]) -> None:
    settings = NotificationsSettings()
    settings.signing_secret()  # refuse to start without the secret that signs unsubscribe links
    create_celery(settings).start(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
