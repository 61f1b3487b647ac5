"""Bearer-token verification done by each service itself: RS256 against the realm's JWKS
(cached, refreshed on an unknown ``kid``), ``iss``, ``aud``, ``exp``/``nbf``, roles and tenant."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt import PyJWK

log = logging.getLogger(__name__)

ROLES = frozenset({"operator", "network_admin", "counselor", "provider", "employer"})
ALLOWED_ALGORITHMS = ["RS256"]


class InvalidToken(Exception):
    """The token cannot be trusted: answered with 401."""


@dataclass(frozen=True)
class Principal:
    subject: str
    username: str
    email: str | None
    roles: frozenset[str]
    tenant: str | None  # the user's home network; None for an operator
    claims: dict[str, Any]
    # Owners below the tenant: catalog provider ids a provider user acts for (claim `providers`),
    # and the employer's firm (claim `firm`). Set by identity at invite time.
    providers: frozenset[str] = frozenset()
    firm: str | None = None

    @property
    def is_operator(self) -> bool:
        return "operator" in self.roles


def tenant_from_claims(claims: dict[str, Any]) -> str | None:
    """Keycloak gives the tenant through a ``tenant`` attribute mapper or the organization claim
    (a list of aliases, or a map alias → attributes)."""
    if isinstance(claims.get("tenant"), str) and claims["tenant"]:
        return claims["tenant"]
    organization = claims.get("organization")
    if isinstance(organization, list) and len(organization) == 1 and isinstance(organization[0], str):
        return organization[0]
    if isinstance(organization, dict) and len(organization) == 1:
        return next(iter(organization))
    return None


def providers_from_claims(claims: dict[str, Any]) -> frozenset[str]:
    """Keycloak's multivalued attribute mapper gives a list; a single value may come as a string."""
    value = claims.get("providers")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str) and v)


class TokenVerifier:
    def __init__(
        self, issuer: str, audience: str, http: httpx.AsyncClient, *, min_refresh_seconds: float = 5.0
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._http = http
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # never fetched: the first unknown kid always fetches
        self._min_refresh = min_refresh_seconds
        self._lock = asyncio.Lock()

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    async def refresh_keys(self) -> None:
        response = await self._http.get(self.jwks_uri, timeout=5)
        response.raise_for_status()
        keys = {}
        for jwk in response.json().get("keys", []):
            if jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig" and jwk.get("kid"):
                keys[jwk["kid"]] = PyJWK(jwk, algorithm="RS256")
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _key_for(self, kid: str) -> PyJWK:
        if kid not in self._keys:
            async with self._lock:
                # A new kid means rotation; refetch, but not more often than min_refresh (forged kids).
                due = self._fetched_at is None or time.monotonic() - self._fetched_at >= self._min_refresh
                if kid not in self._keys and due:
                    try:
                        await self.refresh_keys()
                    except httpx.HTTPError as exc:
                        raise InvalidToken(f"cannot fetch signing keys: {exc}") from exc
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidToken("token signed with an unknown key") from None

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"algorithm {header.get('alg')!r} not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token has no key id")
        key = await self._key_for(kid)
        try:
            claims = jwt.decode(
                token, key.key, algorithms=ALLOWED_ALGORITHMS, audience=self.audience, issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]}, leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token rejected: {exc}") from exc
        roles = frozenset(claims.get("realm_access", {}).get("roles", [])) & ROLES
        return Principal(
            subject=claims["sub"],
            username=claims.get("preferred_username", claims["sub"]),
            email=claims.get("email"),
            roles=roles,
            tenant=None if "operator" in roles else tenant_from_claims(claims),
            claims=claims,
            providers=providers_from_claims(claims),
            firm=claims["firm"] if isinstance(claims.get("firm"), str) and claims["firm"] else None,
        )
