"""Wires the matching service: settings, runtime, app, the expiry sweep, the offer index and the kept
demand vectors."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from runtime import heap
from runtime.http import create_app as create_http_app
from runtime.loops import Sweep
from runtime.service import ServiceRuntime
from runtime.settings import ServiceSettings
from services.matching import api, clusters, encoder, geo, handlers, requests
from services.matching.consumers import CONSUMERS
from services.matching.index import offer_index
from services.matching.kept_demands import demand_vectors

EXPIRY_CHANNEL = "matching_expiry"


class MatchingSettings(ServiceSettings):
    service: str = "matching"
    http_port: int = 8002
    # How often open demands whose start window has passed are closed as expired (also on NOTIFY
    # matching_expiry).
    expiry_sweep_seconds: float = 300.0


def create_app(settings: MatchingSettings | None = None) -> FastAPI:
    settings = settings or MatchingSettings()
    encoder.one_blas_thread()
    runtime = ServiceRuntime(settings, Path(__file__).parent / "migrations", consumer_specs=CONSUMERS)
    # Closes demands after their start window (closed_reason "expired"), emitting the events.
    runtime.workers.append(Sweep(settings.database_url, EXPIRY_CHANNEL, lambda: handlers.expire_due(runtime.pool),
                                 interval=settings.expiry_sweep_seconds))

    async def index_ready() -> str:
        """Loads the offer index and the open demands' vectors at start (readiness is asked before
        traffic) and keeps the index current."""
        index, kept = offer_index(), demand_vectors()
        async with runtime.pool.acquire() as conn:
            await index.sync(conn)
            first = not kept.loaded
            if first:
                tenants = [r["id"] for r in await conn.fetch("SELECT id FROM known_tenants WHERE status = 'active'")]
                await kept.load_open(conn, tenants)
        await asyncio.to_thread(geo.region_of_point, 53.25, 10.41)  # the towns' table, read once
        await asyncio.to_thread(clusters.warm)  # the encoder and the skill groups' vectors, made once
        if first:
            heap.settle()  # no full collection visits the index again (145 ms at a million offers)
        return "ok"

    runtime.readiness_checks["offer_index"] = index_ready
    return create_http_app(runtime, "Bildungsraum matching", [api.router, requests.router],
                           "Demands of employers and the offers that fit them.")
