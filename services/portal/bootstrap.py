"""Wires the portal: settings, HTTP client, Redis sessions, OIDC, the place index, templates,
middleware (sessions, security headers, tracing, metrics), error pages and the page routers."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import heap
from runtime.http import TraceAndMeasure, server_timing
from runtime.places import Gazetteer
from services.portal import pages_auth, pages_public, pages_roles
from services.portal.backends import (
    BackendError,
    BackendMissing,
    BackendNotFound,
    Backends,
    backend_calls,
    backend_seconds,
    open_session,
    visitor_address,
)
from services.portal.oidc import OidcClient
from services.portal.security import CsrfRefused, security_headers
from services.portal.sessions import COOKIE, Session, SessionStore
from services.portal.settings import PortalSettings
from services.portal.web import HERE, Forbidden, Portal, SignInRequired, error_page, make_templates, redirect

KERN_DIST = HERE / "node_modules" / "@kern-ux" / "native" / "dist"


class SessionsAndHeaders:
    """Pure ASGI middleware around every page: the visitor's session loaded from Redis before the
    page and saved (with its cookie) when the page changed it; security headers; a Server-Timing
    header saying how long each service took of the page. Pure ASGI rather than
    ``@app.middleware("http")``, which runs each page in a task of its own with streams between:
    a cost every visitor pays while sixteen others share the two cores. The trace and the metrics
    are the services' own middleware (``runtime.http.TraceAndMeasure``), outside this one."""

    def __init__(self, app: ASGIApp, headers: dict[str, str], secure_cookies: bool) -> None:
        self.app = app
        self.headers = headers
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        started = time.perf_counter()
        portal: Portal | None = getattr(request.app.state, "portal", None)
        needs_session = portal is not None and not scope["path"].startswith(("/assets/", "/static/", "/healthz",
                                                                              "/readyz", "/metrics"))
        calls: list[tuple[str, float, float]] = []
        backend_calls.set(calls)
        visitor_address.set(request.client.host if request.client else None)
        if needs_session:
            request.state.session = await portal.sessions.load(request.cookies.get(COOKIE))

        async def send_page(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if needs_session:
                    await self._keep_session(portal, request.state.session, headers)
                headers.update(self.headers)
                headers["Server-Timing"] = server_timing(
                    {**backend_seconds(calls), "total": time.perf_counter() - started})
            await send(message)

        await self.app(scope, receive, send_page)

    async def _keep_session(self, portal: Portal, session: Session, headers: MutableHeaders) -> None:
        """Saves a changed session and sets (or, once ended, deletes) its cookie on the answer."""
        cookie = Response()
        if session.changed and session.data:
            await portal.sessions.save(session)
            cookie.set_cookie(COOKIE, session.id, httponly=True, samesite="lax", secure=self.secure_cookies,
                              path="/", max_age=None)
        if getattr(session, "ended", False):
            cookie.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=self.secure_cookies)
        for name, value in cookie.raw_headers:
            if name == b"set-cookie":
                headers.append("set-cookie", value.decode("latin-1"))
        if "cache-control" not in headers:
            headers["Cache-Control"] = "no-store"


def create_app(settings: PortalSettings | None = None) -> FastAPI:
    settings = settings or PortalSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        http = httpx.AsyncClient(timeout=settings.backend_timeout_seconds)  # the issuer: sign-in, readiness
        to_services = open_session(settings)
        redis = aioredis.Redis.from_url(settings.redis_url)
        gazetteer = await asyncio.to_thread(lambda: Gazetteer().load(Path(settings.cache_dir)))
        app.state.portal = Portal(
            settings=settings, http=http, redis=redis, backends=Backends(settings, to_services),
            oidc=OidcClient(settings, http),
            sessions=SessionStore(redis, settings.session_ttl_seconds, settings.anonymous_session_ttl_seconds),
            gazetteer=gazetteer, templates=make_templates())
        heap.settle()  # the templates, the gazetteer and the libraries stay: no full collection visits them
        yield
        await http.aclose()
        await to_services.close()
        await redis.aclose()

    app = FastAPI(title="Bildungsraum portal", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    issuer = urlsplit(settings.browser_issuer_url)

    app.add_middleware(SessionsAndHeaders, headers=security_headers(f"{issuer.scheme}://{issuer.netloc}"),
                       secure_cookies=settings.secure_cookies)
    app.add_middleware(TraceAndMeasure)  # outermost: the trace is current in everything the page does

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired):
        return redirect(f"/anmelden?next={quote(exc.next_path, safe='/')}")

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden):
        return error_page(request, 403, "Kein Zugriff",
                          "Diese Seite gehört zu einer anderen Rolle. Wählen Sie oben „Mein Bereich“.")

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused):
        return error_page(request, 403, "Formular abgelaufen",
                          "Das Formular war veraltet oder kam nicht von dieser Seite. Laden Sie die Seite neu "
                          "und senden Sie es noch einmal ab.")

    @app.exception_handler(BackendNotFound)
    async def _backend_not_found(request: Request, exc: BackendNotFound):
        return error_page(request, 404, "Nicht gefunden", "Diese Seite gibt es nicht oder nicht mehr.")

    @app.exception_handler(BackendMissing)
    async def _backend_missing(request: Request, exc: BackendMissing):
        return error_page(request, 503, "Vorübergehend nicht verfügbar",
                          "Dieser Teil der Plattform ist gerade nicht erreichbar oder noch nicht freigeschaltet. "
                          "Versuchen Sie es später noch einmal.")

    @app.exception_handler(BackendError)
    async def _backend_error(request: Request, exc: BackendError):
        return error_page(request, 502 if exc.status >= 500 else 400, "Das hat nicht geklappt",
                          "Die Angaben wurden nicht übernommen. Prüfen Sie sie und versuchen Sie es noch einmal.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if not hasattr(request.state, "session"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        if exc.status_code == 404:
            return error_page(request, 404, "Seite nicht gefunden",
                              "Diese Adresse gibt es nicht. Prüfen Sie sie oder gehen Sie zur Startseite.")
        if exc.status_code == 405:
            return error_page(request, 405, "Nicht möglich", "Diese Seite kann so nicht aufgerufen werden.")
        return error_page(request, exc.status_code, "Fehler", "Die Anfrage konnte nicht bearbeitet werden.")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        portal: Portal = request.app.state.portal
        checks = {}
        try:
            await portal.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc}"
        try:
            r = await portal.http.get(f"{settings.issuer_url}/.well-known/openid-configuration", timeout=2)
            checks["issuer"] = "ok" if r.status_code == 200 else f"error: HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            checks["issuer"] = f"error: {exc}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "unready", "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/assets/kern", StaticFiles(directory=KERN_DIST, check_dir=False), name="kern")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages_auth.router)
    app.include_router(pages_roles.router)
    app.include_router(pages_public.router)  # last: /{tenant}/ would shadow the fixed paths
    return app
