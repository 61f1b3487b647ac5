"""The four services' public HTTP APIs as the portal calls them, with the signed-in user's token.
The portal owns no business data: every page is built from these answers.

The calls go through aiohttp, not httpx (which the portal keeps for sign-in and the issuer): every
page makes at least one call, and on this path httpx cost 1.3 ms of CPU a call against aiohttp's
0.4 ms (the same 23 kB search answer from a local server, one client process, 2,000 calls each); the
portal's pages wait in line behind each other's CPU when sixteen arrive at once."""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp

from runtime.tracing import current_traceparent
from services.portal.settings import PortalSettings

# The (service, start, end) of each backend call made for the current page, set by the middleware:
# the page's Server-Timing header says how much of its time each service took.
backend_calls: ContextVar[list[tuple[str, float, float]] | None] = ContextVar("backend_calls", default=None)


# The visitor's address, set by the middleware: passed on as X-Forwarded-For, so that a service's
# per-client limits (the catalog's public view) count each visitor, not the portal as one client.
visitor_address: ContextVar[str | None] = ContextVar("visitor_address", default=None)


def backend_seconds(calls: list[tuple[str, float, float]]) -> dict[str, float]:
    """Per service, the wall-clock time in which at least one call to it was running (calls made
    side by side count once)."""
    spans: dict[str, float] = {}
    reach: dict[str, float] = {}
    for service, start, end in sorted(calls, key=lambda c: c[1]):
        if end > reach.get(service, float("-inf")):
            spans[service] = spans.get(service, 0.0) + end - max(start, reach.get(service, float("-inf")))
            reach[service] = end
    return spans


class BackendError(Exception):
    """A service answered with an error the page explains in German."""

    def __init__(self, service: str, status: int, body: Any) -> None:
        super().__init__(f"{service} answered {status}")
        self.service, self.status, self.body = service, status, body

    @property
    def field_errors(self) -> list[dict]:
        return self.body.get("errors", []) if isinstance(self.body, dict) else []


class BackendMissing(BackendError):
    """The service cannot do this (yet): unreachable, or it has no such route."""


class BackendNotFound(BackendError):
    """The thing asked for does not exist, or this user may not see it."""


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


def open_session(settings: PortalSettings) -> aiohttp.ClientSession:
    """The portal's one session for calls to the services (call inside the running event loop;
    close it at shutdown): keep-alive connections, each call bounded by the backend timeout."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.backend_timeout_seconds),
        connector=aiohttp.TCPConnector(limit=200, limit_per_host=64, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar())  # one session serves every visitor: it must keep no cookies


def query_pairs(params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> list[tuple[str, str]]:
    """Query parameters as text pairs, written as httpx wrote them (True as "true", None as "")."""
    pairs = params.items() if isinstance(params, Mapping) else (params or [])
    return [(key, "true" if value is True else "false" if value is False else "" if value is None else str(value))
            for key, value in pairs]


class Backends:
    """One shared HTTP session for every call; base URLs from the settings."""

    def __init__(self, settings: PortalSettings, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.urls = {"catalog": settings.catalog_url, "matching": settings.matching_url,
                     "notifications": settings.notifications_url, "identity": settings.identity_url}

    async def call(self, service: str, method: str, path: str, *, token: str | None = None,
                   tenant: str | None = None, params: Any = None, json: Any = None,
                   content: bytes | None = None, content_type: str | None = None,
                   accept: str = "application/json", if_match: str | None = None) -> Reply:
        headers = {"Accept": accept}
        if if_match:
            headers["If-Match"] = if_match
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if tenant:
            headers["X-Tenant"] = tenant  # read by services only for an operator's token
        if content_type:
            headers["Content-Type"] = content_type
        if traceparent := current_traceparent.get():
            headers["traceparent"] = traceparent
        if visitor := visitor_address.get():
            headers["X-Forwarded-For"] = visitor
        started = time.perf_counter()
        try:
            async with self.http.request(method, f"{self.urls[service]}{path}", headers=headers,
                                         params=query_pairs(params), json=json, data=content,
                                         allow_redirects=False) as response:
                raw = await response.read()
                status, reply_headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendMissing(service, 503, {"detail": str(exc) or type(exc).__name__}) from exc
        finally:
            if (calls := backend_calls.get()) is not None:
                calls.append((service, started, time.perf_counter()))
        body: Any
        if "json" in reply_headers.get("content-type", ""):
            try:
                body = jsonlib.loads(raw)
            except ValueError:
                body = None
        else:
            body = raw.decode(response.charset or "utf-8", errors="replace")
        if status < 400:
            return Reply(status, body, reply_headers)
        if status == 404 and _no_such_route(body):
            raise BackendMissing(service, 404, body)
        if status in (404, 403):
            raise BackendNotFound(service, status, body)
        if status in (405, 429, 501, 502, 503, 504):  # 429: the catalog limits this visitor
            raise BackendMissing(service, status, body)
        raise BackendError(service, status, body)

    async def get(self, service: str, path: str, **kwargs) -> Any:
        return (await self.call(service, "GET", path, **kwargs)).body

    async def post(self, service: str, path: str, **kwargs) -> Any:
        return (await self.call(service, "POST", path, **kwargs)).body

    async def put(self, service: str, path: str, **kwargs) -> Any:
        return (await self.call(service, "PUT", path, **kwargs)).body

    async def delete(self, service: str, path: str, **kwargs) -> Any:
        return (await self.call(service, "DELETE", path, **kwargs)).body


def _no_such_route(body: Any) -> bool:
    """FastAPI's own 404 for an unknown path ("Not Found", no detail), not a service's
    "no such demand in this network" problem."""
    return isinstance(body, dict) and body.get("title", body.get("detail")) == "Not Found" and "errors" not in body \
        and body.get("detail") in (None, "Not Found")
