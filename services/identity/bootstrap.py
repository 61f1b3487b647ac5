"""Wires the identity service: settings, runtime, the Keycloak directory, app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from runtime.auth import ROLES
from runtime.http import create_app as create_http_app
from runtime.service import ServiceRuntime
from runtime.settings import ServiceSettings
from services.identity import api, handlers
from services.identity.directory import KeycloakDirectory


class IdentitySettings(ServiceSettings):
    service: str = "identity"
    http_port: int = 8004
    # Keycloak's admin API, reached with identity's confidential client (its service account holds
    # realm-management's manage-users, view-users, manage-realm for organizations). The secret comes
    # from the environment or a file (a mounted Kubernetes Secret); never from the repository.
    keycloak_client_id: str = "bildungsraum-identity"
    keycloak_client_secret: str | None = None
    keycloak_client_secret_file: Path | None = None

    @property
    def keycloak_server_url(self) -> str:
        return self.issuer_url.rstrip("/").rsplit("/realms/", 1)[0]

    @property
    def keycloak_realm(self) -> str:
        return self.issuer_url.rstrip("/").rsplit("/realms/", 1)[1]

    def client_secret(self) -> str:
        if self.keycloak_client_secret:
            return self.keycloak_client_secret
        if self.keycloak_client_secret_file:
            return self.keycloak_client_secret_file.read_text().strip()
        raise RuntimeError("set BR_KEYCLOAK_CLIENT_SECRET or BR_KEYCLOAK_CLIENT_SECRET_FILE")


def create_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    runtime = ServiceRuntime(settings, Path(__file__).parent / "migrations", tenants_table="tenants")

    async def on_start(rt: ServiceRuntime) -> None:
        directory = KeycloakDirectory.connect(settings.keycloak_server_url, settings.keycloak_realm,
                                              settings.keycloak_client_id, settings.client_secret(), ROLES)
        app.state.directory = directory
        await handlers.seed_tenants(rt.pool, directory)

    app = create_http_app(runtime, "Bildungsraum identity", [api.router],
                          "Tenants (regional networks), members and roles.", on_start=on_start)
    api.install_directory_errors(app)
    return app
