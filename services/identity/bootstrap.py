"""Wires the identity service: settings, runtime, app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from runtime.http import create_app as create_http_app
from runtime.service import ServiceRuntime
from runtime.settings import ServiceSettings
from services.identity import api, handlers


class IdentitySettings(ServiceSettings):
    service: str = "identity"
    http_port: int = 8004


def create_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    runtime = ServiceRuntime(settings, Path(__file__).parent / "migrations", tenants_table="tenants")

    return create_http_app(runtime, "Bildungsraum identity", [api.router],
                           "Tenants (regional networks), members and roles.",
                           on_start=lambda rt: handlers.seed_tenants(rt.pool))
