"""Wires the matching service: settings, runtime, app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from runtime.http import create_app as create_http_app
from runtime.service import ServiceRuntime
from runtime.settings import ServiceSettings
from services.matching import api, requests
from services.matching.consumers import CONSUMERS


class MatchingSettings(ServiceSettings):
    service: str = "matching"
    http_port: int = 8002


def create_app(settings: MatchingSettings | None = None) -> FastAPI:
    settings = settings or MatchingSettings()
    runtime = ServiceRuntime(settings, Path(__file__).parent / "migrations", consumer_specs=CONSUMERS)

    return create_http_app(runtime, "Bildungsraum matching", [api.router, requests.router],
                           "Demands of employers and the offers that fit them.")
