"""Forged and misused tokens are refused by every service: each one verifies tokens itself.
Where a claim is what is wrong, the token is signed with the issuer's real key, so only the
claim check can refuse it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from runtime.auth import InvalidToken, IssuerUnavailable, TokenVerifier
from runtime.http import install_problem_handlers
from tests.platform import Platform

# A route of each service that needs a token and changes nothing.
READS = {
    "catalog": "/v1/offers",
    "matching": f"/v1/demands/{uuid.uuid4()}",
    "identity": "/v1/me",
    "notifications": "/v1/deliveries",
}
# Routes that act in a tenant (identity's /v1/me acts in none).
TENANT_READS = {**READS, "identity": "/v1/members"}
USER = "lueneburg-admin"
SERVICES = sorted(READS)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(platform: Platform, claims: dict) -> str:
    """The classic key-confusion attack: the RSA public key (PEM, as served) used as an HMAC secret."""
    public = jwt.PyJWK(platform.signing_key()).key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": platform.signing_key()["kid"]}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _bad_tokens(platform: Platform) -> dict[str, str]:
    now = int(time.time())
    claims = jwt.decode(platform.token(USER), options={"verify_signature": False})
    key = platform.signing_key()
    real_key = jwt.PyJWK(key).key
    return {
        "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": key["kid"]}),
        "HS256 signed with the public key": _hs256_with_public_key(platform, claims),
        "unknown kid": jwt.encode(claims, real_key, algorithm="RS256", headers={"kid": "not-a-key-of-the-realm"}),
        "expired": platform.mint(USER, exp=now - 120, iat=now - 420),
        "not yet valid": platform.mint(USER, nbf=now + 600),
        "issued in the future": platform.mint(USER, iat=now + 600, exp=now + 900),
        "wrong issuer": platform.mint(USER, iss="http://127.0.0.1:1/realms/bildungsraum"),
        "wrong audience": platform.mint(USER, aud=["another-api"]),
        "unknown client (azp)": platform.mint(USER, azp="a-client-nobody-registered"),
        "an ID token": platform.mint(USER, typ="ID"),
        "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, real_key, algorithm="RS256",
                                headers={"kid": key["kid"]}),
    }


@pytest.fixture
def bad_tokens(platform: Platform) -> dict[str, str]:
    return _bad_tokens(platform)


@pytest.mark.parametrize("service", SERVICES)
def test_forged_and_misused_tokens_are_401_on_every_service(platform: Platform, bad_tokens: dict,
                                                            service: str) -> None:
    with platform.client(service, USER) as api:
        assert api.get(READS[service]).status_code in (200, 404)  # the real token passes
    refused = {}
    with platform.client(service) as api:
        for name, token in bad_tokens.items():
            response = api.get(READS[service], headers={"Authorization": f"Bearer {token}"})
            refused[name] = response.status_code
            if response.status_code == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["detail"]
    assert refused == dict.fromkeys(bad_tokens, 401)


@pytest.mark.parametrize("service", SERVICES)
def test_x_tenant_is_only_for_operators(platform: Platform, service: str) -> None:
    path = TENANT_READS[service]
    with platform.client(service, "lueneburg-admin", **{"X-Tenant": "hellweg-hochsauerland"}) as api:
        response = api.get(path)
    assert response.status_code == 403, response.text
    with platform.client(service, "operator", **{"X-Tenant": "hellweg-hochsauerland"}) as api:
        assert api.get(path).status_code in (200, 404)


async def test_issuer_unreachable_is_503_not_401(platform: Platform) -> None:
    """Without keys the service cannot tell a good token from a bad one: 503 with Retry-After,
    so the client retries instead of signing its user out."""
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier("http://127.0.0.1:9/realms/bildungsraum", "bildungsraum-api", http)
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(platform.token(USER))

    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/probe")
    async def probe() -> None:
        raise IssuerUnavailable("cannot fetch the issuer's signing keys")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client:
        response = await client.get("/probe")
    assert response.status_code == 503
    assert response.headers["retry-after"]


async def test_a_token_verified_before_is_refused_once_it_expires(platform: Platform) -> None:
    """Verified tokens are remembered (checking one took 1.6 ms), never past their expiry."""
    now = int(time.time())
    token = platform.mint(USER, iat=now, exp=now + 2)
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(platform.config.issuer_url, "bildungsraum-api", http, leeway_seconds=0)
        assert (await verifier.verify(token)).username == USER
        assert (await verifier.verify(token)).username == USER  # remembered
        await asyncio.sleep(now + 2 - time.time() + 0.1)
        with pytest.raises(InvalidToken, match="expired"):
            await verifier.verify(token)


async def test_keys_are_refetched_by_age_and_cached_keys_serve_while_the_issuer_is_down(platform: Platform) -> None:
    fetches: list[str] = []

    async def count(request: httpx.Request) -> None:
        fetches.append(str(request.url))

    token = platform.token(USER)
    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        verifier = TokenVerifier(platform.config.issuer_url, "bildungsraum-api", http, max_key_age_seconds=0)
        await verifier.verify(token)
        await verifier.verify(token)
        assert len(fetches) == 2  # too old at once: every verification refetched

        cached = TokenVerifier(platform.config.issuer_url, "bildungsraum-api", http, max_key_age_seconds=3600)
        await cached.verify(token)
        await cached.verify(token)
        assert len(fetches) == 3

        # Keys fetched once; then the issuer is unreachable and the keys are due: the cached keys still verify.
        stale = TokenVerifier(platform.config.issuer_url, "bildungsraum-api", http, max_key_age_seconds=0)
        await stale.verify(token)
        stale.issuer = "http://127.0.0.1:9/realms/bildungsraum"  # the certs URL now leads nowhere
        with pytest.raises(InvalidToken, match="issuer"):
            await stale.verify(token)  # iss no longer matches, but keys came from the cache, no 503
