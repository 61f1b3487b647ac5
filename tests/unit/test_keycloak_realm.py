"""The Keycloak realm as code (deploy/keycloak/realm-bildungsraum.json) has what the platform relies
on, and the dev issuer that stands in for it locally agrees with it (clients, roles, claims)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from runtime.auth import ROLES
from runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
REALM = json.loads((ROOT / "deploy/keycloak/realm-bildungsraum.json").read_text())
ISSUER = ROOT / "deploy/local/dev-issuer"
SERVICES = ("identity", "catalog", "matching", "notifications")


def _clients() -> dict[str, dict]:
    return {c["clientId"]: c for c in REALM["clients"]}


def _mappers() -> dict[str, dict]:
    scope = next(s for s in REALM["clientScopes"] if s["name"] == "bildungsraum-api")
    return {m["name"]: m for m in scope["protocolMappers"]}


def test_realm_organizations_and_roles() -> None:
    assert REALM["realm"] == "bildungsraum" and REALM["enabled"] is True
    assert REALM["organizationsEnabled"] is True
    assert {r["name"] for r in REALM["roles"]["realm"]} == ROLES
    assert REALM["defaultSignatureAlgorithm"] == "RS256"


def test_a_confidential_client_with_a_service_account_per_service() -> None:
    clients = _clients()
    for service in SERVICES:
        client = clients[f"bildungsraum-{service}"]
        assert client["publicClient"] is False and client["serviceAccountsEnabled"] is True, service
        assert client["standardFlowEnabled"] is False and client["directAccessGrantsEnabled"] is False, service
        assert "secret" not in client, "secrets never in the repository"
    identity = next(u for u in REALM["users"] if u.get("serviceAccountClientId") == "bildungsraum-identity")
    assert {"manage-users", "manage-realm"} <= set(identity["clientRoles"]["realm-management"])


def test_cli_is_public_and_portal_uses_the_code_flow_with_pkce() -> None:
    cli, portal = _clients()["bildungsraum-cli"], _clients()["bildungsraum-portal"]
    assert cli["publicClient"] is True and cli["directAccessGrantsEnabled"] is True
    assert portal["standardFlowEnabled"] is True and portal["implicitFlowEnabled"] is False
    assert portal["directAccessGrantsEnabled"] is False
    assert portal["attributes"]["pkce.code.challenge.method"] == "S256"
    assert all(u.startswith("https://") for u in portal["redirectUris"])


def test_tokens_carry_audience_tenant_and_owners() -> None:
    mappers = _mappers()
    assert mappers["audience bildungsraum-api"]["config"]["included.custom.audience"] == \
        ServiceSettings.model_fields["token_audience"].default
    for claim in ("tenant", "providers", "firm"):
        config = mappers[claim]["config"]
        assert config["claim.name"] == claim and config["access.token.claim"] == "true"
    assert mappers["providers"]["config"]["multivalued"] == "true"
    assert mappers["organization"]["protocolMapper"] == "oidc-organization-membership-mapper"
    assert "bildungsraum-api" in REALM["defaultDefaultClientScopes"]
    for client in _clients().values():
        assert "bildungsraum-api" in client["defaultClientScopes"], client["clientId"]


def test_services_accept_exactly_the_realms_clients() -> None:
    accepted = set(ServiceSettings.model_fields["token_clients"].default.split(","))
    assert accepted == set(_clients())


def test_dev_issuer_agrees_with_the_realm() -> None:
    config = (ISSUER / "config.mjs").read_text()
    dev_clients = set(re.findall(r"_CLIENT_ID = '([^']+)'", config))
    assert "bildungsraum-cli" in dev_clients
    # The dev issuer's one confidential client stands in for the per-service clients.
    assert dev_clients - {"bildungsraum-services"} <= set(_clients())
    assert re.search(r"API_AUDIENCE = '([^']+)'", config).group(1) == "bildungsraum-api"
    roles = re.search(r"REALM_ROLES = \[([^\]]+)\]", (ISSUER / "admin.mjs").read_text()).group(1)
    assert set(re.findall(r"'([^']+)'", roles)) == ROLES
