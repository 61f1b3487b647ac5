"""Answers of other services the portal keeps for a while (a network's name and imprint, its
provider list), so that a page does not ask for them each time."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.portal.backends import backend_calls

log = logging.getLogger(__name__)


class Kept:
    """Per key, the last answer of ``fetch``, kept ``ttl`` seconds. When it is older, one request
    fetches it again and the others meanwhile get the kept one (or, on a first visit, wait for that
    same fetch): sixteen visitors at once must not ask a service sixteen times, and none of them
    waits for a refresh. A failed refresh keeps the old answer; the next request tries again."""

    def __init__(self, ttl: float, service: str, limit: int = 1000) -> None:
        self.ttl, self.limit = ttl, limit  # limit: keys come from addresses anyone can type
        self.service = service  # whose answers: a page that waits for one counts the wait as its
        self._answers: dict[str, tuple[float, Any]] = {}
        self._fetching: dict[str, asyncio.Future] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        kept = self._answers.get(key)
        if kept and time.monotonic() - kept[0] < self.ttl:
            return kept[1]
        fetching = self._fetching.get(key)
        if fetching is None:
            # The fetch belongs to no page: its calls are not counted in the Server-Timing of the
            # page that happened to start it (which may not wait for it at all).
            detached = contextvars.copy_context()
            detached.run(backend_calls.set, None)
            fetching = asyncio.get_running_loop().create_task(self._fetch(key, fetch), context=detached)
            self._fetching[key] = fetching
            fetching.add_done_callback(lambda done: self._fetched(key, done))
        if kept:
            return kept[1]
        started = time.perf_counter()
        try:
            return await asyncio.shield(fetching)
        finally:
            if (calls := backend_calls.get()) is not None:
                calls.append((self.service, started, time.perf_counter()))

    async def _fetch(self, key: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        answer = await fetch()
        self._answers.pop(key, None)
        while len(self._answers) >= self.limit:  # the longest kept goes first
            self._answers.pop(next(iter(self._answers)))
        self._answers[key] = (time.monotonic(), answer)
        return answer

    def _fetched(self, key: str, done: asyncio.Future) -> None:
        self._fetching.pop(key, None)
        if not done.cancelled() and done.exception():
            log.warning("kept answer for %s not refreshed: %r", key, done.exception())

    def age(self, key: str, seconds: float) -> None:
        """Make the kept answer ``seconds`` older (tests of the refresh)."""
        at, answer = self._answers[key]
        self._answers[key] = (at - seconds, answer)
