"""Server-side sessions in Redis. The browser holds only a random id in an HttpOnly, SameSite=Lax
cookie; tokens, the CSRF token and form drafts stay on the server."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

COOKIE = "br_portal_session"


@dataclass
class Session:
    id: str
    data: dict[str, Any] = field(default_factory=dict)
    is_new: bool = False
    changed: bool = False

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.changed = True

    def pop(self, key: str, default: Any = None) -> Any:
        if key in self.data:
            self.changed = True
        return self.data.pop(key, default)

    @property
    def user(self) -> dict | None:
        return self.data.get("user")

    @property
    def csrf_token(self) -> str:
        if "csrf" not in self.data:
            self.set("csrf", secrets.token_urlsafe(32))
        return self.data["csrf"]

    def flash(self, message: str) -> None:
        self.set("flash", message)


class SessionStore:
    def __init__(self, redis: aioredis.Redis, ttl: int, anonymous_ttl: int) -> None:
        self.redis, self.ttl, self.anonymous_ttl = redis, ttl, anonymous_ttl

    @staticmethod
    def _key(session_id: str) -> str:
        # Only a hash of the id is stored: a read of Redis does not hand out live cookies.
        return "portal:session:" + hashlib.sha256(session_id.encode()).hexdigest()

    def new(self) -> Session:
        return Session(secrets.token_urlsafe(32), is_new=True)

    async def load(self, session_id: str | None) -> Session:
        if session_id and len(session_id) < 100:
            raw = await self.redis.get(self._key(session_id))
            if raw is not None:
                return Session(session_id, json.loads(raw))
        return self.new()

    async def save(self, session: Session) -> None:
        ttl = self.ttl if session.user else self.anonymous_ttl
        await self.redis.set(self._key(session.id), json.dumps(session.data), ex=ttl)

    async def delete(self, session: Session) -> None:
        await self.redis.delete(self._key(session.id))

    async def rotate(self, session: Session) -> Session:
        """A new id for the same data (at sign-in: no session fixation)."""
        await self.delete(session)
        fresh = self.new()
        fresh.data, fresh.changed = dict(session.data), True
        return fresh
