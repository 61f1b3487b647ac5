"""FastAPI plumbing shared by the services: RFC 9457 problem details, bearer auth and the acting
tenant as ``Annotated`` dependencies, trace and metrics middleware, health and metrics routes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse as parse_rate
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import heap, metrics
from runtime.auth import InvalidToken, IssuerUnavailable, Principal
from runtime.db import TRANSIENT_DATABASE_ERRORS
from runtime.errors import Conflict, EventTooLarge, NotFound
from runtime.guards import RateLimits, RequestGuard, policy_of, route_policies
from runtime.service import ServiceRuntime
from runtime.tracing import continue_trace, current_traceparent

PROBLEM_JSON = "application/problem+json"
_UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's own detail for such a body


class ProblemDocument(BaseModel):
    """RFC 9457 problem details as every service answers an error (documented in each OpenAPI)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None  # per field: field, message, type


# Documented on every route, so that generated requests can check each error answer's status,
# content type and shape against the service's own OpenAPI.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {PROBLEM_JSON: {"schema": ProblemDocument.model_json_schema()}}}
    for status, description in {
        400: "Bad request", 401: "No valid token", 403: "Not allowed", 404: "Not found (or not visible)",
        405: "Method not allowed", 409: "Conflict", 412: "Stale If-Match", 413: "Body too large",
        415: "Unsupported content type", 422: "Invalid fields", 428: "If-Match required", 429: "Too many requests",
        503: "A dependency is unavailable"}.items()
}


class Problem(Exception):
    """Raised by handlers and routes; rendered as application/problem+json."""

    def __init__(self, status: int, title: str, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def server_timing(spans: Mapping[str, float]) -> str:
    """A ``Server-Timing`` header's value: each span (seconds) as ``name;dur=`` milliseconds, in order."""
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in spans.items())


def problem_response(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg"), "type": err.get("type")}
        for err in exc.errors()
    ]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(422, "Invalid request", "The request has invalid fields.", errors=_field_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
            # Undecodable bytes or nesting too deep: malformed JSON like any other.
            return problem_response(422, "Invalid request", "The body is not valid JSON.", errors=[
                {"field": "body", "message": "not valid JSON (encoding or nesting)", "type": "json_invalid"}])
        return problem_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        headers = exc.extra.pop("headers", None)
        response = problem_response(exc.status, exc.title, exc.detail, **exc.extra)
        response.headers.update(headers or {})
        return response

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return problem_response(404, "Not found", f"No {exc} in this network.")

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return problem_response(409, "Conflict", str(exc))

    @app.exception_handler(EventTooLarge)
    async def _too_large(_: Request, exc: EventTooLarge) -> JSONResponse:
        # Nothing was changed: the transaction that would have written the event rolled back.
        return problem_response(413, "Content too large", str(exc))

    @app.exception_handler(InvalidToken)
    async def _token(_: Request, exc: InvalidToken) -> JSONResponse:
        return problem_response(401, "Unauthorized", str(exc))

    @app.exception_handler(asyncpg.QueryCanceledError)
    async def _too_slow(_: Request, exc: asyncpg.QueryCanceledError) -> JSONResponse:
        # The statement timeout stopped it (settings.database_statement_timeout_ms): nothing changed.
        response = problem_response(503, "Service unavailable",
                                    "The request took too long and was stopped; narrow it or try again later.")
        response.headers["Retry-After"] = "10"
        return response

    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL restarting, failing over or out of connections: not the client's fault, and
        # nothing was changed (the transaction did not commit). Before, such a request got a 500.
        response = problem_response(503, "Service unavailable",
                                    "The database cannot be reached just now; please try again in a moment.")
        response.headers["Retry-After"] = "5"
        return response

    for unavailable in (*TRANSIENT_DATABASE_ERRORS, ConnectionError, asyncpg.ConnectionDoesNotExistError):
        app.add_exception_handler(unavailable, _database_away)

    @app.exception_handler(asyncpg.InterfaceError)
    async def _connection_gone(request: Request, exc: asyncpg.InterfaceError) -> JSONResponse:
        if "connection is closed" in str(exc) or "connection was closed" in str(exc):
            return await _database_away(request, exc)
        raise exc  # a programming error: a 500, as before

    @app.exception_handler(IssuerUnavailable)
    async def _issuer_down(_: Request, exc: IssuerUnavailable) -> JSONResponse:
        # Not the client's fault: it may retry the same token once the issuer is back.
        response = problem_response(503, "Service unavailable", str(exc))
        response.headers["Retry-After"] = "5"
        return response


class TraceAndMeasure:
    """Pure ASGI middleware: continues the caller's trace, answers with its ``traceparent`` and
    counts each request per route. Not ``@app.middleware("http")``: that runs every request in a
    task of its own with streams between, a cost each request pays on a busy core."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        continue_trace(Headers(scope=scope).get("traceparent"))
        started = time.perf_counter()
        status = 500

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["traceparent"] = current_traceparent.get() or ""
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(scope["method"], path, status).inc()
            metrics.HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - started)


async def get_runtime(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
_bearer = HTTPBearer(auto_error=False, description="Access token of the realm `bildungsraum`")


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise InvalidToken("bearer token required")
    principal = await runtime.verifier.verify(credentials.credentials)
    await _rate_limit(request, principal)
    return principal


async def _rate_limit(request: Request, principal: Principal) -> None:
    """Writes are counted per user (verified subject, so nobody can spend another's budget); a
    route may add its own, stricter limit (imports)."""
    limits: RateLimits | None = getattr(request.app.state, "rate_limits", None)
    if limits is None or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    checks = [(limits.writes, ("writes", principal.subject))]
    policy = policy_of(request.scope)
    if policy.rate:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        checks.append((parse_rate(policy.rate), (request.method, route, principal.subject)))
    for item, identifiers in checks:
        if wait := await limits.retry_after(item, *identifiers):
            raise Problem(429, "Too many requests", f"Too many changes in a short time; try again in {wait} s.",
                          headers={"Retry-After": str(wait)})


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class Actor:
    """Who acts, and in which tenant: the token's network, or for an operator the ``X-Tenant`` header."""

    def __init__(self, principal: Principal, tenant: str) -> None:
        self.principal = principal
        self.tenant = tenant

    def has_any(self, *roles: str) -> bool:
        return bool(self.principal.roles & set(roles))


async def get_actor(
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    x_tenant: Annotated[str | None, Header(description="Tenant an operator acts in")] = None,
) -> Actor:
    if principal.is_operator:
        if not x_tenant:
            raise Problem(400, "Tenant required", "An operator names the tenant it acts in with X-Tenant.")
        tenant = x_tenant
    else:
        if principal.tenant is None:
            raise Problem(403, "Forbidden", "The token names no tenant.")
        if x_tenant and x_tenant != principal.tenant:
            raise Problem(403, "Forbidden", "A network user acts only in its own network.")
        tenant = principal.tenant
    if not await runtime.tenant_exists(tenant):
        raise Problem(403, "Unknown tenant", f"Tenant {tenant!r} does not exist.")
    return Actor(principal, tenant)


def require_roles(*roles: str):
    async def dependency(actor: Annotated[Actor, Depends(get_actor)]) -> Actor:
        if not actor.has_any(*roles):
            raise Problem(403, "Forbidden", f"This needs one of the roles: {', '.join(roles)}.")
        return actor

    return Depends(dependency)


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: database, broker and issuer reachable",
                responses={503: {"description": "Not ready: the checks say which dependency is gone"}})
    async def readyz(runtime: RuntimeDep) -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "unready", "checks": checks},
                            status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(
    runtime: ServiceRuntime,
    title: str,
    routers: Iterable[APIRouter],
    description: str = "",
    on_start: Callable[[ServiceRuntime], Awaitable[None]] | None = None,
) -> FastAPI:
    """The service's FastAPI app; its lifespan starts the runtime (pool, relay, consumers)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start()
        app.state.rate_limits = RateLimits(runtime.settings.redis_url, runtime.settings.rate_limit_writes)
        if on_start is not None:
            await on_start(runtime)
        heap.settle()  # what it loaded at start stays: no full collection visits it again
        yield
        await runtime.stop()

    app = FastAPI(title=title, description=description, lifespan=lifespan, version="1.0.0")
    app.state.runtime = runtime  # the migrate step reads its migrations from here, before any start
    install_problem_handlers(app)
    # Before the routes, so a refused body is never read into memory by anything behind it.
    app.add_middleware(RequestGuard, problem=problem_response,
                       anonymous_writes=runtime.settings.rate_limit_anonymous_writes)
    app.add_middleware(TraceAndMeasure)  # outside the guard: refused requests are traced and counted too

    routers = list(routers)
    app.include_router(health_router())
    for router in routers:
        app.include_router(router, responses=PROBLEM_RESPONSES)
    app.state.route_policies = route_policies(routers)
    return app
