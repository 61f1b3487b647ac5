"""Wires the matching service: settings, runtime, app, the expiry sweep and the offer index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from runtime.http import create_app as create_http_app
from runtime.loops import ListeningLoop
from runtime.service import ServiceRuntime
from runtime.settings import ServiceSettings
from services.matching import api, clusters, geo, handlers, requests
from services.matching.consumers import CONSUMERS
from services.matching.index import offer_index

EXPIRY_CHANNEL = "matching_expiry"


class MatchingSettings(ServiceSettings):
    service: str = "matching"
    http_port: int = 8002
    # How often open demands whose start window has passed are closed as expired (also on NOTIFY
    # matching_expiry).
    expiry_sweep_seconds: float = 300.0


class ExpirySweep(ListeningLoop):
    """Closes demands after their start window (closed_reason "expired"), emitting the events."""

    channel = EXPIRY_CHANNEL

    def __init__(self, runtime: ServiceRuntime, interval: float) -> None:
        super().__init__(runtime.settings.database_url, interval=interval)
        self._runtime = runtime

    async def work(self, conn: asyncpg.Connection) -> bool:
        await handlers.expire_due(self._runtime.pool)
        return False


def create_app(settings: MatchingSettings | None = None) -> FastAPI:
    settings = settings or MatchingSettings()
    runtime = ServiceRuntime(settings, Path(__file__).parent / "migrations", consumer_specs=CONSUMERS)
    runtime.workers.append(ExpirySweep(runtime, settings.expiry_sweep_seconds))

    async def index_ready() -> str:
        """Loads the offer index at start (readiness is asked before traffic) and keeps it current."""
        index = offer_index()
        async with runtime.pool.acquire() as conn:
            await index.sync(conn)
        await asyncio.to_thread(geo.region_of_point, 53.25, 10.41)  # the towns' table, read once
        await asyncio.to_thread(clusters.warm)  # the encoder and the skill groups' vectors, made once
        return "ok"

    runtime.readiness_checks["offer_index"] = index_ready
    return create_http_app(runtime, "Bildungsraum matching", [api.router, requests.router],
                           "Demands of employers and the offers that fit them.")
