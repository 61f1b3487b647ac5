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
needs_keycloak = pytest.mark.skipif(not KEYCLOAK_URL, reason="KEYCLOAK_URL not set: no real Keycloak configured")


def _keycloak() -> KeycloakOpenID:
    return KeycloakOpenID(server_url=KEYCLOAK_URL, realm_name=REALM,
                          client_id=os.environ.get("KEYCLOAK_CLIENT_ID", "bildungsraum-cli"))


@needs_keycloak
async def test_real_keycloak_tokens_pass_the_services_verifier() -> None:
    token = _keycloak().token(os.environ["KEYCLOAK_USER"], os.environ["KEYCLOAK_PASSWORD"])["access_token"]
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(f"{KEYCLOAK_URL.rstrip('/')}/realms/{REALM}",
                                 os.environ.get("KEYCLOAK_AUDIENCE", "bildungsraum-api"), http)
        principal = await verifier.verify(token)
    assert principal.roles, "the token carries no realm role of the platform"
    assert principal.is_operator or principal.tenant, "the token names no tenant (organization or tenant claim)"


@needs_keycloak
def test_dev_issuer_serves_keycloaks_layout(platform: Platform) -> None:
    def relative(document: dict) -> dict[str, str]:
        issuer_path = urlparse(document["issuer"]).path
        return {key: urlparse(document[key]).path.removeprefix(issuer_path)
                for key in ("token_endpoint", "jwks_uri", "userinfo_endpoint", "introspection_endpoint")}

    real = _keycloak().well_known()
    dev = httpx.get(f"{platform.config.issuer_url}/.well-known/openid-configuration").json()
    assert relative(dev) == relative(real)
    assert "RS256" in real["id_token_signing_alg_values_supported"]


def _directories(platform: Platform):
    """The same adapter against the dev issuer, and against a real Keycloak when configured."""
    from runtime.auth import ROLES
    from services.identity.directory import KeycloakDirectory

    dev_secret = (platform.config.var_dir / "dev-issuer" / "services-client-secret").read_text().strip()
    base = platform.config.issuer_url.rsplit("/realms/", 1)[0]
    yield "dev issuer", KeycloakDirectory.connect(base, "bildungsraum", "bildungsraum-services", dev_secret, ROLES)
    if KEYCLOAK_URL and os.environ.get("KEYCLOAK_ADMIN_CLIENT_SECRET"):
        yield "Keycloak", KeycloakDirectory.connect(
            KEYCLOAK_URL, REALM, os.environ.get("KEYCLOAK_ADMIN_CLIENT_ID", "bildungsraum-identity"),
            os.environ["KEYCLOAK_ADMIN_CLIENT_SECRET"], ROLES)


async def test_directory_adapter_provisions_invites_and_removes(platform: Platform) -> None:
    """What identity does through python-keycloak's KeycloakAdmin: an Organization per tenant, a user
    with required actions, membership, a realm role and attributes; listed; removed. Against the dev
    issuer always; against a real Keycloak 26 when KEYCLOAK_URL and KEYCLOAK_ADMIN_CLIENT_SECRET are set."""
    import uuid

    from services.identity.directory import INVITE_ACTIONS, NewMember

    for name, directory in _directories(platform):
        alias = f"contract-{uuid.uuid4().hex[:8]}"
        organization = await directory.ensure_organization(alias, f"Vertrag {alias}", {"logo_url": ["https://x.example/l.png"]})
        assert (await directory.ensure_organization(alias, f"Vertrag {alias}", {})).id == organization.id, name
        assert (await directory.organization(alias)).id == organization.id, name
        member = await directory.invite(organization, NewMember(
            username=f"{alias}-anbieter", email=f"{alias}@anbieter.example", first_name="Ada", last_name="Anbieter",
            role="provider", providers=frozenset({"p-1"}), firm=None))
        assert member.roles == {"provider"} and member.providers == {"p-1"}, name
        assert set(member.required_actions) == set(INVITE_ACTIONS), name
        listed = {m.username: m for m in await directory.members(organization)}
        assert listed[member.username].roles == {"provider"}, name
        other = await directory.ensure_organization(f"{alias}-x", f"Anderes {alias}", {})
        assert await directory.remove(other, member.id) is False, name  # not a member there
        assert await directory.remove(organization, member.id) is True, name
        assert await directory.members(organization) == [], name
