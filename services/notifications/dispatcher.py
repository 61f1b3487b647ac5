"""Enqueues due deliveries as Celery tasks, only after they are committed.

Consumers write delivery rows in the inbox transaction and NOTIFY ``deliveries_pending``; this
loop, woken by that NOTIFY and every ``sweep_interval_seconds``, claims due deliveries (pending,
not enqueued within ``sweep_grace_seconds``), sends them as tasks of ``task_batch_size`` and
commits the claim. A crash anywhere loses nothing (the row stays due) and a double enqueue is
harmless (the task is idempotent). Several service processes may run it: claims skip rows another holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from runtime.loops import ListeningLoop
from services.notifications import store
from services.notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

Enqueue = Callable[[list[tuple[str, str]]], None]  # [(delivery id, tenant id)]; blocking, called in a thread


def celery_enqueue(celery_app, settings: NotificationsSettings) -> Enqueue:
    from services.notifications.worker import SEND_DELIVERIES

    def enqueue(items: list[tuple[str, str]]) -> None:
        batch = settings.task_batch_size
        for start in range(0, len(items), batch):
            celery_app.send_task(SEND_DELIVERIES, args=[items[start:start + batch]], queue=settings.celery_queue)

    return enqueue


class DeliveryDispatcher(ListeningLoop):
    channel = store.NOTIFY_CHANNEL

    def __init__(self, settings: NotificationsSettings, enqueue: Enqueue) -> None:
        super().__init__(settings.database_url, interval=settings.sweep_interval_seconds)
        self._settings = settings
        self._enqueue = enqueue
        self.enqueued = 0

    async def work(self, conn: asyncpg.Connection) -> bool:
        return await self.dispatch_once(conn) >= self._settings.sweep_batch_size

    async def dispatch_once(self, conn: asyncpg.Connection) -> int:
        """Claim due deliveries and enqueue them; the claim commits only after the enqueue."""
        s = self._settings
        async with conn.transaction():
            rows = await store.claim_due(conn, s.sweep_grace_seconds, s.sweep_batch_size)
            if rows:
                await asyncio.to_thread(self._enqueue, [(str(r[0]), r[1]) for r in rows])
        self.enqueued += len(rows)
        return len(rows)
