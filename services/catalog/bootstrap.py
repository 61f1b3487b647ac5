"""Wires the catalog service: settings, runtime, app."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from limits import parse as parse_limit

from runtime.http import create_app as create_http_app
from runtime.http import problem_response
from runtime.loops import Sweep
from runtime.service import ServiceRuntime
from runtime.settings import ServiceSettings
from services.catalog import api, handlers
from services.catalog.consumers import CONSUMERS
from services.catalog.domain import RuleBroken
from services.catalog.handlers import Forbidden, StaleWrite

QCG_CHANNEL = "catalog_qcg"


class CatalogSettings(ServiceSettings):
    service: str = "catalog"
    http_port: int = 8001
    # The public network view, per client address: all of it, and one and the same page (the
    # narrower one trips first when a page is hammered). The portal passes its visitor's address on.
    rate_limit_public: str = "600/minute"
    rate_limit_public_page: str = "60/minute"
    # How often offers whose provider's AZAV certification no longer allows qcg lose it (also on NOTIFY
    # catalog_qcg).
    qcg_sweep_seconds: float = 3600.0


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or CatalogSettings()
    runtime = ServiceRuntime(settings, Path(__file__).parent / "migrations", consumer_specs=CONSUMERS,
                             extensions=("cube", "earthdistance"))
    # Offers whose provider's AZAV certification no longer allows qcg lose it (handlers.revoke_lapsed_qcg).
    runtime.workers.append(Sweep(settings.database_url, QCG_CHANNEL, lambda: handlers.revoke_lapsed_qcg(runtime.pool),
                                 interval=settings.qcg_sweep_seconds))

    app = create_http_app(runtime, "Bildungsraum catalog", [api.router, api.public],
                          "Providers and their offers (Angebote) with dated sessions; search.")
    app.state.import_slots = asyncio.Semaphore(api.IMPORTS_AT_ONCE)
    app.state.public_limits = (parse_limit(settings.rate_limit_public), parse_limit(settings.rate_limit_public_page))
    install_catalog_problems(app)
    return app


def install_catalog_problems(app: FastAPI) -> None:
    """The catalog's own refusals as problem details: a broken rule names itself and its field."""

    @app.exception_handler(RuleBroken)
    async def _rule(_: Request, exc: RuleBroken) -> JSONResponse:
        return problem_response(422, "Rule not met", exc.rule,
                                errors=[{"field": f"body.{exc.field}", "message": exc.rule, "type": "rule"}])

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return problem_response(403, "Forbidden", str(exc))

    @app.exception_handler(StaleWrite)
    async def _stale(_: Request, exc: StaleWrite) -> JSONResponse:
        response = problem_response(412, "Precondition failed",
                                    f"Someone changed the offer meanwhile ({exc}); read it again and retry.")
        response.headers["ETag"] = f'"{exc.current_version}"'
        return response
