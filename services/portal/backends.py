"""The four services' public HTTP APIs as the portal calls them, with the signed-in user's token.
The portal owns no business data: every page is built from these answers."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx

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
    headers: httpx.Headers


class Backends:
    """One shared HTTP client for every call; base URLs from the settings."""

    def __init__(self, settings: PortalSettings, http: httpx.AsyncClient) -> None:
        self.http = http
        self.urls = {"catalog": settings.catalog_url, "matching": settings.matching_url,
                     "notifications": settings.notifications_url, "identity": settings.identity_url}

    async def call(self, service: str, method: str, path: str, *, token: str | None = None,
                   tenant: str | None = None, params: Any = None, json: Any = None,
                   content: bytes | None = None, content_type: str | None = None,
                   accept: str = "application/json") -> Reply:
        headers = {"Accept": accept}
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
            response = await self.http.request(method, f"{self.urls[service]}{path}", headers=headers,
                                               params=params, json=json, content=content)
        except httpx.HTTPError as exc:
            raise BackendMissing(service, 503, {"detail": str(exc)}) from exc
        finally:
            if (calls := backend_calls.get()) is not None:
                calls.append((service, started, time.perf_counter()))
        body: Any
        if "json" in response.headers.get("content-type", ""):
            try:
                body = response.json()
            except ValueError:
                body = None
        else:
            body = response.text
        if response.status_code < 400:
            return Reply(response.status_code, body, response.headers)
        if response.status_code == 404 and _no_such_route(body):
            raise BackendMissing(service, 404, body)
        if response.status_code in (404, 403):
            raise BackendNotFound(service, response.status_code, body)
        if response.status_code in (405, 429, 501, 502, 503, 504):  # 429: the catalog limits this visitor
            raise BackendMissing(service, response.status_code, body)
        raise BackendError(service, response.status_code, body)

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
