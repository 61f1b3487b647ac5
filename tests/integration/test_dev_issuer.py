"""The dev issuer (deploy/local/dev-issuer) against python-keycloak and PyJWT.

Starts the real Node.js process; needs `npm ci --prefix deploy/local/dev-issuer` first.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError

from runtime.auth import InvalidToken, TokenVerifier

ROOT = Path(__file__).resolve().parents[2]
ISSUER_DIR = ROOT / "deploy" / "local" / "dev-issuer"
SERVER = ISSUER_DIR / "server.mjs"
REALM = "bildungsraum"
SERVICES_SECRET = "test-services-secret"
TENANTS = ("hellweg-hochsauerland", "westfaelisches-ruhrgebiet", "lueneburg")


def _expected_sub(username: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:bildungsraum:dev-issuer:user:{username}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH")
    if not (ISSUER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("oidc-provider is not installed: run `npm ci --prefix deploy/local/dev-issuer`")
    return node


def _env(port: int, keys_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEV_ISSUER_", "BR_ENV"))}
    env.update(
        BR_ENV="test",
        DEV_ISSUER_HOST="127.0.0.1",
        DEV_ISSUER_PORT=str(port),
        DEV_ISSUER_KEYS_FILE=str(keys_file),
        DEV_ISSUER_SERVICES_SECRET=SERVICES_SECRET,
    )
    env.update(extra)
    return env


class Issuer:
    def __init__(self, port: int, keys_file: Path, log: Path) -> None:
        self.port = port
        self.keys_file = keys_file
        self.base = f"http://127.0.0.1:{port}"
        self.issuer = f"{self.base}/realms/{REALM}"
        self.log_file = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [_node(), str(SERVER)],
            cwd=ROOT,
            env=_env(port, keys_file),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dev issuer exited with {self.proc.returncode}:\n{self.log_file.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"dev issuer not ready after {timeout}s:\n{self.log_file.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def openid(self, client_id: str = "bildungsraum-cli", secret: str | None = None) -> KeycloakOpenID:
        return KeycloakOpenID(
            server_url=f"{self.base}/",
            realm_name=REALM,
            client_id=client_id,
            client_secret_key=secret,
        )

    def services(self) -> KeycloakOpenID:
        return self.openid("bildungsraum-services", SERVICES_SECRET)


def _start(tmp: Path, keys_file: Path, name: str) -> Issuer:
    issuer = Issuer(_free_port(), keys_file, tmp / f"{name}.log")
    issuer.wait_ready()
    return issuer


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dev-issuer")


@pytest.fixture(scope="module")
def issuer(tmp_dir: Path):
    keys_file = tmp_dir / "state" / "nested" / "jwks.json"  # dirs do not exist yet
    running = _start(tmp_dir, keys_file, "issuer")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def employer_token(issuer: Issuer) -> dict:
    return issuer.openid().token("lueneburg-employer", "dev")


def _private_key(keys_file: Path) -> dict:
    return json.loads(keys_file.read_text())["keys"][0]


def _verify(issuer: Issuer, token: str, audience: str = "bildungsraum-api") -> dict:
    """Verify as a service would: RS256 only, key by kid from the served certs, iss and aud."""
    certs = issuer.openid().certs()
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in certs["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(jwk)
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=issuer.issuer)


def test_discovery_has_keycloak_layout(issuer: Issuer) -> None:
    wk = issuer.openid().well_known()
    oidc = f"{issuer.issuer}/protocol/openid-connect"
    assert wk["issuer"] == issuer.issuer
    assert wk["token_endpoint"] == f"{oidc}/token"
    assert wk["jwks_uri"] == f"{oidc}/certs"
    assert wk["userinfo_endpoint"] == f"{oidc}/userinfo"
    assert wk["introspection_endpoint"] == f"{oidc}/token/introspect"
    assert "password" in wk["grant_types_supported"]


def test_keys_file_is_a_private_jwks_and_certs_are_public_only(issuer: Issuer) -> None:
    assert stat.S_IMODE(issuer.keys_file.stat().st_mode) == 0o600
    key = _private_key(issuer.keys_file)
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig" and key["kid"]
    assert "d" in key
    assert jwt.PyJWK(key).key.key_size == 2048

    certs = issuer.openid().certs()
    assert [k["kid"] for k in certs["keys"]] == [key["kid"]]
    for k in certs["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k)
        assert k["n"] == key["n"] and k["e"] == key["e"]


def test_password_grant_gives_keycloak_shaped_rs256_jwt(issuer: Issuer, employer_token: dict) -> None:
    t = employer_token
    assert t["token_type"] == "Bearer"
    assert t["expires_in"] == 300
    assert set(t["scope"].split()) == {"openid", "profile", "email"}
    assert t["refresh_token"] and t["id_token"]

    access = t["access_token"]
    header = jwt.get_unverified_header(access)
    assert header["alg"] == "RS256"
    assert header["kid"] == _private_key(issuer.keys_file)["kid"]

    claims = _verify(issuer, access)
    now = time.time()
    assert claims["iss"] == issuer.issuer
    assert claims["aud"] == ["bildungsraum-api"]
    assert claims["azp"] == "bildungsraum-cli"
    assert claims["typ"] == "Bearer"
    assert claims["sub"] == _expected_sub("lueneburg-employer")
    assert claims["preferred_username"] == "lueneburg-employer"
    assert claims["email"] == "lueneburg-employer@bildungsraum.example"
    assert "employer" in claims["realm_access"]["roles"]
    assert not {"operator", "network_admin", "provider", "counselor"} & set(claims["realm_access"]["roles"])
    assert claims["organization"] == ["lueneburg"]
    assert claims["tenant"] == "lueneburg"
    assert now < claims["exp"] <= now + 301
    assert claims["iat"] <= now + 1
    assert claims["jti"]
    assert set(claims["scope"].split()) == {"openid", "profile", "email"}

    # python-keycloak's own validation (signature with the served certs, exp).
    decoded = issuer.openid().decode_token(access, validate=True)
    assert decoded["sub"] == claims["sub"]

    # Verification rejects a tampered token and a wrong audience.
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(issuer, access, audience="someone-else")
    head, _body, sig = access.split(".")
    forged = jwt.utils.base64url_encode(
        json.dumps({**claims, "tenant": "hellweg-hochsauerland"}).encode()
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(issuer, f"{head}.{forged}.{sig}")


@pytest.mark.parametrize(
    ("suffix", "role"),
    [("admin", "network_admin"), ("provider", "provider"), ("counselor", "counselor")],
)
def test_tenant_users_have_their_role(issuer: Issuer, suffix: str, role: str) -> None:
    username = f"hellweg-hochsauerland-{suffix}"
    claims = _verify(issuer, issuer.openid().token(username, "dev")["access_token"])
    assert role in claims["realm_access"]["roles"]
    assert claims["tenant"] == "hellweg-hochsauerland"
    assert claims["organization"] == ["hellweg-hochsauerland"]
    assert claims["sub"] == _expected_sub(username)


def test_every_seeded_user_logs_in(issuer: Issuer) -> None:
    roles = {
        "admin": "network_admin",
        "provider": "provider",
        "provider2": "provider",
        "employer": "employer",
        "employer2": "employer",
        "counselor": "counselor",
    }
    cli = issuer.openid()
    for tenant in TENANTS:
        for suffix, role in roles.items():
            claims = _verify(issuer, cli.token(f"{tenant}-{suffix}", "dev")["access_token"])
            assert role in claims["realm_access"]["roles"], (tenant, suffix)
            assert claims["tenant"] == tenant


@pytest.mark.parametrize(("suffix", "firm"), [("employer", "firma-1"), ("employer2", "firma-2"),
                                              ("provider", None), ("admin", None)])
async def test_employers_carry_their_firm_and_nobody_starts_with_providers(issuer: Issuer, suffix: str,
                                                                           firm: str | None) -> None:
    token = issuer.openid().token(f"lueneburg-{suffix}", "dev")["access_token"]
    claims = _verify(issuer, token)
    assert claims.get("firm") == (f"lueneburg-{firm}" if firm else None)
    assert "providers" not in claims
    async with httpx.AsyncClient() as http:
        principal = await TokenVerifier(issuer.issuer, "bildungsraum-api", http).verify(token)
    assert principal.firm == claims.get("firm")
    assert principal.providers == frozenset()


async def test_principal_reads_the_providers_claim(issuer: Issuer) -> None:
    """Identity sets `providers` at invite time; Keycloak's multivalued mapper gives a list."""
    claims = _verify(issuer, issuer.openid().token("lueneburg-provider", "dev")["access_token"])
    key = _private_key(issuer.keys_file)
    token = jwt.encode({**claims, "providers": ["p-1", "p-2"]}, jwt.PyJWK(key).key, algorithm="RS256",
                       headers={"kid": key["kid"]})
    async with httpx.AsyncClient() as http:
        principal = await TokenVerifier(issuer.issuer, "bildungsraum-api", http).verify(token)
    assert principal.providers == {"p-1", "p-2"}
    assert principal.firm is None


def test_operator_has_no_tenant(issuer: Issuer) -> None:
    claims = _verify(issuer, issuer.openid().token("operator", "dev")["access_token"])
    assert "operator" in claims["realm_access"]["roles"]
    assert "tenant" not in claims
    assert "organization" not in claims
    assert claims["sub"] == _expected_sub("operator")


@pytest.mark.parametrize(("username", "password"), [("lueneburg-employer", "wrong"), ("nobody", "dev")])
def test_bad_credentials_are_401_invalid_grant(issuer: Issuer, username: str, password: str) -> None:
    with pytest.raises(KeycloakAuthenticationError) as exc:
        issuer.openid().token(username, password)
    assert exc.value.response_code == 401
    assert json.loads(exc.value.response_body)["error"] == "invalid_grant"


def test_userinfo(issuer: Issuer, employer_token: dict) -> None:
    info = issuer.openid().userinfo(employer_token["access_token"])
    assert info["sub"] == _expected_sub("lueneburg-employer")
    assert info["preferred_username"] == "lueneburg-employer"
    assert info["email"] == "lueneburg-employer@bildungsraum.example"
    assert info["tenant"] == "lueneburg"


def test_introspection(issuer: Issuer, employer_token: dict) -> None:
    services = issuer.services()
    active = services.introspect(employer_token["access_token"])
    assert active["active"] is True
    assert active["sub"] == _expected_sub("lueneburg-employer")
    assert active["tenant"] == "lueneburg"
    assert active["client_id"] == "bildungsraum-cli"
    assert "employer" in active["realm_access"]["roles"]

    assert services.introspect("garbage") == {"active": False}

    # A token signed with the realm's real key but expired is inactive too.
    key = _private_key(issuer.keys_file)
    claims = _verify(issuer, employer_token["access_token"])
    now = int(time.time())
    expired = jwt.encode(
        {**claims, "iat": now - 600, "exp": now - 300},
        jwt.PyJWK(key).key,
        algorithm="RS256",
        headers={"kid": key["kid"]},
    )
    assert services.introspect(expired) == {"active": False}

    with pytest.raises(KeycloakAuthenticationError):
        issuer.openid("bildungsraum-services", "wrong-secret").introspect(employer_token["access_token"])


def test_refresh_token_grant(issuer: Issuer, employer_token: dict) -> None:
    refreshed = issuer.openid().refresh_token(employer_token["refresh_token"])
    claims = _verify(issuer, refreshed["access_token"])
    assert claims["sub"] == _expected_sub("lueneburg-employer")
    assert claims["tenant"] == "lueneburg"
    assert claims["azp"] == "bildungsraum-cli"


def test_client_credentials(issuer: Issuer) -> None:
    token = issuer.services().token(grant_type="client_credentials")
    claims = _verify(issuer, token["access_token"])
    assert claims["azp"] == "bildungsraum-services"
    assert "tenant" not in claims


def test_refuses_to_start_outside_dev_and_test(tmp_dir: Path) -> None:
    keys_file = tmp_dir / "refused" / "jwks.json"
    for env_value in ("production", None):
        env = _env(_free_port(), keys_file)
        if env_value is None:
            del env["BR_ENV"]
        else:
            env["BR_ENV"] = env_value
        result = subprocess.run(
            [_node(), str(SERVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 2
        assert "BR_ENV" in result.stderr and "refusing to start" in result.stderr
    assert not keys_file.exists()


def test_keys_file_is_reused_across_restarts(tmp_dir: Path) -> None:
    keys_file = tmp_dir / "restart" / "jwks.json"
    first = _start(tmp_dir, keys_file, "first")
    try:
        kid = first.openid().certs()["keys"][0]["kid"]
        token = first.openid().token("operator", "dev")["access_token"]
    finally:
        first.stop()
    content = keys_file.read_text()

    second = Issuer(first.port, keys_file, tmp_dir / "second.log")  # same issuer URL
    second.wait_ready()
    try:
        assert second.openid().certs()["keys"][0]["kid"] == kid
        assert keys_file.read_text() == content
        # A token from before the restart still verifies and introspects as active.
        assert _verify(second, token)["preferred_username"] == "operator"
        assert second.services().introspect(token)["active"] is True
    finally:
        second.stop()


async def test_service_verifier_caches_jwks_and_refreshes_on_key_rotation(tmp_dir: Path) -> None:
    """The services' own TokenVerifier: keys fetched once and cached; a token with a new kid after
    rotation triggers one refetch; a refetch is not repeated faster than min_refresh_seconds."""
    port = _free_port()
    first = Issuer(port, tmp_dir / "rotation-a.json", tmp_dir / "rotation-a.log")
    first.wait_ready()
    fetches: list[str] = []

    async def count(request: httpx.Request) -> None:
        fetches.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        verifier = TokenVerifier(first.issuer, "bildungsraum-api", http, min_refresh_seconds=0)
        old_token = first.openid().token("lueneburg-provider", "dev")["access_token"]
        assert (await verifier.verify(old_token)).tenant == "lueneburg"
        assert (await verifier.verify(old_token)).roles == {"provider"}
        assert len(fetches) == 1  # cached

        first.stop()
        rotated = Issuer(port, tmp_dir / "rotation-b.json", tmp_dir / "rotation-b.log")  # a new key, a new kid
        rotated.wait_ready()
        try:
            new_token = rotated.openid().token("lueneburg-provider", "dev")["access_token"]
            assert jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
            assert (await verifier.verify(new_token)).username == "lueneburg-provider"
            assert len(fetches) == 2  # refreshed once for the unknown kid

            # A stream of unknown kids must not hammer the issuer: at most one fetch per interval.
            patient = TokenVerifier(rotated.issuer, "bildungsraum-api", http, min_refresh_seconds=3600)
            assert (await patient.verify(new_token)).username == "lueneburg-provider"
            assert len(fetches) == 3
            for _ in range(3):
                with pytest.raises(InvalidToken, match="unknown key"):
                    await patient.verify(old_token)  # its key was rotated away
            assert len(fetches) == 3

            # The first verifier remembers the old token as verified; its key is gone now, so is the token.
            with pytest.raises(InvalidToken, match="unknown key"):
                await verifier.verify(old_token)
        finally:
            rotated.stop()


def test_admin_api_only_for_the_services_account_and_invited_users_sign_in(issuer: Issuer,
                                                                            employer_token: dict) -> None:
    """The Admin REST subset (admin.mjs): refused without a token and to a user's token; with the
    services client's token a user made there signs in with its role, tenant and attributes."""
    users = f"{issuer.base}/admin/realms/{REALM}/users"
    assert httpx.get(users).status_code == 401
    assert httpx.get(users, headers={"Authorization": f"Bearer {employer_token['access_token']}"}).status_code == 403
    admin = {"Authorization": f"Bearer {issuer.services().token(grant_type='client_credentials')['access_token']}"}
    created = httpx.post(users, headers=admin, json={
        "username": "lueneburg-neu", "email": "neu@lueneburg.example", "enabled": True,
        "attributes": {"providers": ["p-9"]}, "requiredActions": ["UPDATE_PASSWORD"]})
    assert created.status_code == 201, created.text
    user_id = created.headers["Location"].rsplit("/", 1)[1]
    orgs = httpx.get(f"{issuer.base}/admin/realms/{REALM}/organizations", headers=admin,
                     params={"search": "lueneburg", "exact": "true"}).json()
    assert [o["alias"] for o in orgs] == ["lueneburg"]
    assert httpx.post(f"{issuer.base}/admin/realms/{REALM}/organizations/{orgs[0]['id']}/members", headers=admin,
                      content=user_id).status_code == 201
    role = httpx.get(f"{issuer.base}/admin/realms/{REALM}/roles/provider", headers=admin).json()
    assert httpx.post(f"{users}/{user_id}/role-mappings/realm", headers=admin, json=[role]).status_code == 204
    assert httpx.post(users, headers=admin, json={"username": "lueneburg-neu"}).status_code == 409

    claims = _verify(issuer, issuer.openid().token("lueneburg-neu", "dev")["access_token"])
    assert claims["tenant"] == "lueneburg" and claims["providers"] == ["p-9"]
    assert "provider" in claims["realm_access"]["roles"]
    assert httpx.delete(f"{users}/{user_id}", headers=admin).status_code == 204
    with pytest.raises(KeycloakAuthenticationError):
        issuer.openid().token("lueneburg-neu", "dev")
