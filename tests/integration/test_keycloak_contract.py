"""Contract with a real Keycloak 26: runs when KEYCLOAK_URL is set (no Keycloak installs on the
development machines, so the suite otherwise runs against the dev issuer, and this is skipped).

    KEYCLOAK_URL=https://keycloak.example/ KEYCLOAK_USER=lueneburg-employer KEYCLOAK_PASSWORD=... \\
        .venv/bin/python -m pytest tests/integration/test_keycloak_contract.py

Optional: KEYCLOAK_REALM (bildungsraum), KEYCLOAK_CLIENT_ID (bildungsraum-cli), KEYCLOAK_AUDIENCE
(bildungsraum-api)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import httpx
import pytest
from keycloak import KeycloakOpenID

from runtime.auth import TokenVerifier
from tests.platform import Platform

KEYCLOAK_URL = os.environ.get("KEYCLOAK_URL", "")
REALM = os.environ.get("KEYCLOAK_REALM", "bildungsraum")
pytestmark = pytest.mark.skipif(not KEYCLOAK_URL, reason="KEYCLOAK_URL not set: no real Keycloak configured")


def _keycloak() -> KeycloakOpenID:
    return KeycloakOpenID(server_url=KEYCLOAK_URL, realm_name=REALM,
                          client_id=os.environ.get("KEYCLOAK_CLIENT_ID", "bildungsraum-cli"))


async def test_real_keycloak_tokens_pass_the_services_verifier() -> None:
    token = _keycloak().token(os.environ["KEYCLOAK_USER"], os.environ["KEYCLOAK_PASSWORD"])["access_token"]
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(f"{KEYCLOAK_URL.rstrip('/')}/realms/{REALM}",
                                 os.environ.get("KEYCLOAK_AUDIENCE", "bildungsraum-api"), http)
        principal = await verifier.verify(token)
    assert principal.roles, "the token carries no realm role of the platform"
    assert principal.is_operator or principal.tenant, "the token names no tenant (organization or tenant claim)"


def test_dev_issuer_serves_keycloaks_layout(platform: Platform) -> None:
    def relative(document: dict) -> dict[str, str]:
        issuer_path = urlparse(document["issuer"]).path
        return {key: urlparse(document[key]).path.removeprefix(issuer_path)
                for key in ("token_endpoint", "jwks_uri", "userinfo_endpoint", "introspection_endpoint")}

    real = _keycloak().well_known()
    dev = httpx.get(f"{platform.config.issuer_url}/.well-known/openid-configuration").json()
    assert relative(dev) == relative(real)
    assert "RS256" in real["id_token_signing_alg_values_supported"]
