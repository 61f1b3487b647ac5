"""Answers of other services the portal keeps for a while (a network's name and imprint, its
provider list), so that a page does not ask for them each time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class Kept:
    """Per key, the last answer of ``fetch``, kept ``ttl`` seconds. When it is older, one request
    fetches it again and the others meanwhile get the kept one (or, on a first visit, wait for that
    same fetch): sixteen visitors at once must not ask a service sixteen times, and none of them
    waits for a refresh. A failed refresh keeps the old answer; the next request tries again."""

    def __init__(self, ttl: float, limit: int = 1000) -> None:
        self.ttl, self.limit = ttl, limit  # limit: keys come from addresses anyone can type
        self._answers: dict[str, tuple[float, Any]] = {}
        self._fetching: dict[str, asyncio.Future] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        kept = self._answers.get(key)
        if kept and time.monotonic() - kept[0] < self.ttl:
            return kept[1]
        fetching = self._fetching.get(key)
        if fetching is None:
            fetching = self._fetching[key] = asyncio.ensure_future(self._fetch(key, fetch))
            fetching.add_done_callback(lambda done: self._fetched(key, done))
        if kept:
            return kept[1]
        return await asyncio.shield(fetching)

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
