"""A background loop over one PostgreSQL connection, woken by NOTIFY on a channel (and by a
sweep interval as a safety net), that reconnects with backoff when anything fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from runtime.db import init_connection

log = logging.getLogger(__name__)


class ListeningLoop:
    channel: str = ""

    def __init__(self, dsn: str, *, interval: float) -> None:
        self._dsn = dsn
        self._interval = interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                await self._run_connected()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting", type(self).__name__)
                self.on_failure()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def _run_connected(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await init_connection(conn)
            if not await self.acquire(conn):
                return
            await conn.add_listener(self.channel, lambda *_: self._wake.set())
            while not self._stopping.is_set():
                self._wake.clear()
                if not await self.work(conn) and await self.sleep():
                    return
        finally:
            await conn.close()

    async def sleep(self, seconds: float | None = None) -> bool:
        """Wait for a NOTIFY or the interval; True when stopping."""
        try:
            await asyncio.wait_for(self._wake.wait(), self._interval if seconds is None else seconds)
        except TimeoutError:
            pass
        return self._stopping.is_set()

    async def acquire(self, conn: asyncpg.Connection) -> bool:
        """Before listening: False to give up (stopping)."""
        return True

    async def work(self, conn: asyncpg.Connection) -> bool:
        """One round; True when more is waiting (run again at once)."""
        raise NotImplementedError

    def on_failure(self) -> None:
        """Drop whatever a failure may have spoilt."""


class Sweep(ListeningLoop):
    """A job run every interval, and at once on NOTIFY to its channel (tests and operators wake it)."""

    def __init__(self, dsn: str, channel: str, job: Callable[[], Awaitable[object]], *, interval: float) -> None:
        super().__init__(dsn, interval=interval)
        self.channel = channel
        self._job = job

    async def work(self, conn: asyncpg.Connection) -> bool:
        await self._job()
        return False
