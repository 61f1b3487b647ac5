"""Wires the catalog service: settings, runtime, app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from runtime.http import create_app as create_http_app
from runtime.service import ServiceRuntime
from runtime.settings import ServiceSettings
from services.catalog import api
from services.catalog.consumers import CONSUMERS


class CatalogSettings(ServiceSettings):
    service: str = "catalog"
    http_port: int = 8001


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or CatalogSettings()
    runtime = ServiceRuntime(settings, Path(__file__).parent / "migrations", consumer_specs=CONSUMERS,
                             extensions=("cube", "earthdistance"))

    return create_http_app(runtime, "Bildungsraum catalog", [api.router],
                           "Providers and their offers (Angebote) with dated sessions; search.")
