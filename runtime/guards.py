"""What stands between a hostile request and a service: a body limit per route (413), JSON that
refuses NaN, Infinity, numbers out of range, lone surrogates and deep nesting (422), per-client rate
limits on writes (429 with Retry-After), and security headers on every answer."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB
DEFAULT_MAX_BODY = 256 * KIB  # an offer with 500 sessions and a long description fits in a tenth of it
MAX_BUFFERED_BODY = 4 * MIB  # bodies up to this are read whole and checked here; larger ones stream
MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2**63 - 1  # what a bigint column holds; larger is never meant
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class RoutePolicy:
    max_body: int = DEFAULT_MAX_BODY
    rate: str | None = None  # a `limits` string such as "10/minute", per client, on top of the write limit


def route_policy(*, max_body: int = DEFAULT_MAX_BODY, rate: str | None = None) -> Callable:
    """Declare a route's own body limit and rate limit; put it below the route decorator:

        @router.post("/v1/imports")
        @route_policy(max_body=50 * MIB, rate="10/minute")
        async def import_catalog(...): ...
    """
    parse(rate) if rate else None  # a typo fails at import, not at the first request

    def mark(endpoint: Callable) -> Callable:
        endpoint.__route_policy__ = RoutePolicy(max_body, rate)  # type: ignore[attr-defined]
        return endpoint

    return mark


def route_policies(routers: Iterable[Any]) -> list[tuple[re.Pattern, frozenset[str], RoutePolicy]]:
    """Each route's path pattern, methods and policy, read once from the routers a service includes
    (looked up before routing, so the guard can answer before anything reads the body)."""
    table = []
    for router in routers:
        for route in getattr(router, "routes", ()):
            policy = getattr(getattr(route, "endpoint", None), "__route_policy__", None)
            if policy is not None:
                regex, _, _ = compile_path(route.path)
                table.append((regex, frozenset(getattr(route, "methods", None) or ()), policy))
    return table


def policy_of(scope: Scope) -> RoutePolicy:
    """The policy of the route this request goes to; routes that declare none get the default."""
    table = getattr(getattr(scope.get("app"), "state", None), "route_policies", ())
    for regex, methods, policy in table:
        if scope["method"] in methods and regex.match(scope["path"]):
            return policy
    return RoutePolicy()


class UnsafeJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise UnsafeJson(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJson(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise UnsafeJson("integer is out of range")
    value = int(text)
    if abs(value) > MAX_JSON_INT:
        raise UnsafeJson("integer is out of range")
    return value


def _check_structure(document: Any) -> None:
    """Depth and lone surrogates, walked without recursion."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise UnsafeJson("text contains a lone surrogate (not valid Unicode)") from None
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise UnsafeJson(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def strict_json(body: bytes) -> Any:
    """Parse a request body as JSON that a service can store and compute with."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float,
                              parse_int=_bounded_int)
    except UnsafeJson:
        raise
    except RecursionError:
        raise UnsafeJson(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsafeJson(f"not valid JSON: {exc}") from None
    _check_structure(document)
    return document


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI reads a body without a content type as JSON
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class RateLimits:
    """Per-client counters in Redis, so every process of a service shares them (moving window)."""

    def __init__(self, redis_url: str, writes: str) -> None:
        self._storage = RedisStorage(redis_url.replace("redis://", "async+redis://", 1), implementation="redispy",
                                     key_prefix="br-rate")
        self._limiter = MovingWindowRateLimiter(self._storage)
        self.writes = parse(writes)

    async def retry_after(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Count one hit; None if allowed, else the seconds until the client may try again. A Redis
        outage lets requests through (logged): the limit protects the platform, it must not stop it."""
        try:
            if await self._limiter.hit(item, *identifiers):
                return None
            stats = await self._limiter.get_window_stats(item, *identifiers)
        except Exception as exc:  # noqa: BLE001 (any storage failure: fail open)
            log.warning("rate limit storage unavailable, request let through: %s", exc)
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))


class RequestGuard:
    """Pure ASGI middleware: it sees the body before FastAPI does and can answer without reading it."""

    def __init__(self, app: ASGIApp, problem: Callable[..., Any], anonymous_writes: str = "30/minute") -> None:
        self.app = app
        self.problem = problem  # runtime.http.problem_response, passed in to avoid an import cycle
        self.anonymous_writes = parse(anonymous_writes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        send = _with_security_headers(send, authenticated="authorization" in headers)
        policy = policy_of(scope)

        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return await self._answer(scope, receive, send, 400, "Bad request", "Content-Length is not a number.")
            if int(declared) > policy.max_body:
                return await self._too_large(scope, receive, send, policy)

        if scope["method"] in _UNSAFE_METHODS and "authorization" not in headers:
            limits: RateLimits | None = getattr(scope["app"].state, "rate_limits", None)
            client = (scope.get("client") or ("unknown",))[0]
            if limits and (wait := await limits.retry_after(self.anonymous_writes, "anonymous", client)):
                return await self._answer(scope, receive, send, 429, "Too many requests",
                                          f"Try again in {wait} s.", headers={"Retry-After": str(wait)})

        # JSON is parsed strictly here, for bodies of ordinary size; a route that takes large bodies
        # (imports) streams them and parses them itself.
        if scope["method"] in _UNSAFE_METHODS and _is_json(headers.get("content-type")) \
                and policy.max_body <= MAX_BUFFERED_BODY:
            body = await _read_body(receive, policy.max_body)
            if body is None:
                return await self._too_large(scope, receive, send, policy)
            if body:
                try:
                    strict_json(body)
                except UnsafeJson as exc:
                    return await self._answer(
                        scope, receive, send, 422, "Invalid request", "The body is not valid JSON.",
                        errors=[{"field": "body", "message": str(exc), "type": "json_invalid"}])
            return await self.app(scope, _replay(body, receive), send)

        # Other bodies (uploads) stream through, counted: past the limit the answer becomes 413.
        state = {"received": 0, "exceeded": False, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > policy.max_body:
                    state["exceeded"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                return  # the app's own answer to a cut body is replaced by the 413 below
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._too_large(scope, receive, send, policy)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, policy: RoutePolicy) -> None:
        await self._answer(scope, receive, send, 413, "Request body too large",
                           f"This endpoint accepts at most {policy.max_body} bytes.", max_bytes=policy.max_body,
                           headers={"Connection": "close"})

    async def _answer(self, scope: Scope, receive: Receive, send: Send, status: int, title: str, detail: str,
                      headers: dict[str, str] | None = None, **extra: Any) -> None:
        response = self.problem(status, title, detail, **extra)
        response.headers.update(headers or {})
        await response(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes the limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for a disconnect, as the server would

    return replayed


def _with_security_headers(send: Send, authenticated: bool) -> Send:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            raw = list(message.get("headers", []))
            present = {name.lower() for name, _ in raw}
            raw.append((b"x-content-type-options", b"nosniff"))
            if b"x-frame-options" not in present:
                raw.append((b"x-frame-options", b"DENY"))
            if b"referrer-policy" not in present:
                raw.append((b"referrer-policy", b"no-referrer"))
            if authenticated and b"cache-control" not in present:
                # An answer made for one user must not be kept by a shared cache or the browser.
                raw.append((b"cache-control", b"no-store"))
            message = {**message, "headers": raw}
        await send(message)

    return secured
