"""Bearer-token verification done by each service itself: RS256 only, against the realm's JWKS
(cached, refreshed by age and on an unknown ``kid``), ``iss``, ``aud``, ``azp``, ``exp``/``nbf``/``iat``
within a bounded clock skew; then roles, tenant and the owners below it (providers, firm)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt import PyJWK

log = logging.getLogger(__name__)

ROLES = frozenset({"operator", "network_admin", "counselor", "provider", "employer"})
ALLOWED_ALGORITHMS = ["RS256"]


MAX_LEEWAY_SECONDS = 60.0
# Tokens verified, remembered until they expire: a user's client (the portal, for its signed-in user)
# sends the same token with every request, and PyJWT took 1.6 ms of CPU to check one (its header's
# base64 alone 0.3 ms), a quarter of the catalog's own time for a search (BENCHMARKS). A few KiB
# each (the token and its claims).
VERIFIED_TOKENS = 4096


class InvalidToken(Exception):
    """The token cannot be trusted: answered with 401."""


class IssuerUnavailable(Exception):
    """The issuer's keys cannot be fetched: the token may be fine, so 503, not 401."""


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
    """Verifies the realm's access tokens. Keys are cached; they are refetched when older than
    ``max_key_age`` (so a key the issuer revoked stops being trusted) and when a token names an
    unknown ``kid`` (rotation), the latter at most once per ``min_refresh_seconds`` so forged kids
    cannot make the service hammer the issuer."""

    def __init__(
        self, issuer: str, audience: str, http: httpx.AsyncClient, *, min_refresh_seconds: float = 5.0,
        max_key_age_seconds: float = 600.0, leeway_seconds: float = 5.0,
        clients: frozenset[str] | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._http = http
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # never fetched: the first unknown kid always fetches
        self._min_refresh = min_refresh_seconds
        self._max_age = max_key_age_seconds
        # A clock skew larger than a minute is a broken clock, not a reason to accept stale tokens.
        self._leeway = min(max(leeway_seconds, 0.0), MAX_LEEWAY_SECONDS)
        self._clients = clients  # the realm's clients whose tokens the services accept (azp); None: any
        self._lock = asyncio.Lock()
        self._verified: OrderedDict[str, tuple[Principal, str, float]] = OrderedDict()  # (who, kid, good until)

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    async def refresh_keys(self) -> None:
        try:
            response = await self._http.get(self.jwks_uri, timeout=5)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IssuerUnavailable(f"cannot fetch the issuer's signing keys: {exc}") from exc
        keys = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig" and jwk.get("kid") \
                    and jwk.get("alg", "RS256") in ALLOWED_ALGORITHMS:
                keys[jwk["kid"]] = PyJWK(jwk, algorithm="RS256")
        self._keys = keys
        self._fetched_at = time.monotonic()

    def _age(self) -> float:
        return float("inf") if self._fetched_at is None else time.monotonic() - self._fetched_at

    async def _key_for(self, kid: str) -> PyJWK:
        if kid not in self._keys or self._age() >= self._max_age:
            async with self._lock:
                if self._age() >= self._max_age:
                    try:
                        await self.refresh_keys()
                    except IssuerUnavailable:
                        if not self._keys:
                            raise
                        # Keep serving with the keys we have; try again at the next request.
                        log.warning("issuer unreachable; verifying with cached keys")
                elif kid not in self._keys and self._age() >= self._min_refresh:
                    await self.refresh_keys()
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidToken("token signed with an unknown key") from None

    async def verify(self, token: str) -> Principal:
        """The token's principal, or InvalidToken. A token verified before is answered from memory
        while it has not expired, its key is still the issuer's and the keys are not due for a
        refetch: so a revoked key stops a remembered token when it stops a new one."""
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, kid, good_until = remembered
            if time.time() < good_until and kid in self._keys and self._age() < self._max_age:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, kid = await self._verify_fully(token)
        # PyJWT refuses a token once ``now > exp + leeway``
        self._verified[token] = (principal, kid, principal.claims["exp"] + self._leeway)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    async def _verify_fully(self, token: str) -> tuple[Principal, str]:
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
                options={"require": ["exp", "iat", "iss", "sub", "aud"]}, leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("token not yet valid") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token rejected: {exc}") from exc
        if not isinstance(claims.get("iat"), int | float) or claims["iat"] > time.time() + self._leeway:
            raise InvalidToken("token issued in the future")
        if claims.get("typ", "Bearer") != "Bearer":
            raise InvalidToken(f"a {claims.get('typ')!r} token is not an access token")
        if self._clients is not None and claims.get("azp") not in self._clients:
            raise InvalidToken(f"token issued to client {claims.get('azp')!r}, which this platform does not accept")
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
        ), kid
