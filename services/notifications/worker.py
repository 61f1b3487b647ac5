"""The Celery app of the notifications service (Redis broker).

    celery -A services.notifications.worker:celery_app worker -Q notifications -c 4 --without-mingle --without-gossip

Creating the app opens no connection; the worker connects when it starts, a sender on first send.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

import asyncpg
from celery import Celery, signals

from runtime.db import create_pool
from runtime.logs import configure_logging
from services.notifications.delivery import deliver
from services.notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

SEND_DELIVERY = "notifications.send_delivery"
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
        task_routes={SEND_DELIVERY: {"queue": settings.celery_queue}},
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # A task not acknowledged within this time is handed to another worker ...
            "visibility_timeout": settings.celery_visibility_timeout,
            # ... looked for this often (kombu's default sweep is 10 s x a throttle of 10).
            "unacked_restore_interval": settings.celery_restore_interval,
            "unacked_restore_throttle": 1,
            # A worker killed while restoring must not block restores for kombu's default 300 s.
            "unacked_mutex_expire": max(5, settings.celery_visibility_timeout),
        },
        worker_hijack_root_logger=False,
    )
    app.conf.notifications_settings = settings

    @app.task(bind=True, name=SEND_DELIVERY, max_retries=None)
    def send_delivery(self, delivery_id: str, tenant_id: str | None = None) -> str:
        try:
            loop, pool = _process_resources(settings)
            result = loop.run_until_complete(deliver(settings, pool, uuid.UUID(delivery_id), tenant_id))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self.request.retries >= INFRA_MAX_RETRIES:
                raise
            log.warning("delivery %s: infrastructure error, retrying: %s", delivery_id, exc)
            raise self.retry(exc=exc, countdown=min(30, 2 ** self.request.retries)) from exc
        if result.retry_in is not None:
            raise self.retry(countdown=result.retry_in)
        return result.status

    return app


_resources: dict[int, tuple[asyncio.AbstractEventLoop, asyncpg.Pool]] = {}


def _process_resources(settings: NotificationsSettings) -> tuple[asyncio.AbstractEventLoop, asyncpg.Pool]:
    """One event loop and one small pool per worker process, made on its first task: a fresh
    loop and two new PostgreSQL connections per mail cost more than sending the mail."""
    pid = os.getpid()  # a forked pool process must not use its parent's connections
    if pid not in _resources:
        loop = asyncio.new_event_loop()
        pool = loop.run_until_complete(create_pool(settings, min_size=1, max_size=2))
        _resources.clear()
        _resources[pid] = (loop, pool)
    return _resources[pid]


@signals.setup_logging.connect
def _json_logs(loglevel=None, **_: object) -> None:
    """Worker processes log JSON lines like the services."""
    configure_logging("notifications-worker", loglevel or "INFO")


celery_app = create_celery(NotificationsSettings())
