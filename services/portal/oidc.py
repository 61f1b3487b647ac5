"""Sign-in against the realm: OpenID Connect authorization code flow with PKCE (S256, RFC 7636),
token refresh and RP-initiated logout. The three requests are plain form posts over the shared
httpx client (Authlib's httpx integration is deprecated in its current release); what comes back
is checked by the runtime's own verifier (RS256, iss, aud, exp, and the ID token's nonce)
before a session trusts it."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import urlencode

import httpx

from runtime.auth import InvalidToken, Principal, TokenVerifier
from services.portal.settings import PortalSettings

SCOPE = "openid profile email"
PROTOCOL = "/protocol/openid-connect"


class SignInFailed(Exception):
    """The issuer's answer cannot be trusted or used; the user starts again."""


class OidcClient:
    def __init__(self, settings: PortalSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.issuer = settings.issuer_url.rstrip("/")
        self.access_verifier = TokenVerifier(self.issuer, settings.token_audience, http,
                                             min_refresh_seconds=settings.jwks_min_refresh_seconds)
        self.id_verifier = TokenVerifier(self.issuer, settings.oidc_client_id, http,
                                         min_refresh_seconds=settings.jwks_min_refresh_seconds)

    @property
    def redirect_uri(self) -> str:
        return f"{self.settings.portal_public_url.rstrip('/')}/auth/callback"

    def start(self) -> tuple[str, dict]:
        """The issuer's login URL and what the callback must find in the session."""
        pending = {"state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24),
                   "verifier": secrets.token_urlsafe(64)}
        challenge = base64.urlsafe_b64encode(hashlib.sha256(pending["verifier"].encode()).digest()).rstrip(b"=")
        params = {"response_type": "code", "client_id": self.settings.oidc_client_id, "scope": SCOPE,
                  "redirect_uri": self.redirect_uri, "state": pending["state"], "nonce": pending["nonce"],
                  "code_challenge": challenge.decode(), "code_challenge_method": "S256"}
        return f"{self.settings.browser_issuer_url}{PROTOCOL}/auth?{urlencode(params)}", pending

    async def _token(self, form: dict[str, str]) -> dict:
        s = self.settings
        form = {**form, "client_id": s.oidc_client_id}
        auth = (s.oidc_client_id, s.oidc_client_secret) if s.oidc_client_secret else None
        try:
            response = await self.http.post(f"{self.issuer}{PROTOCOL}/token", data=form, auth=auth,
                                             timeout=s.backend_timeout_seconds)
        except httpx.HTTPError as exc:
            raise SignInFailed(f"issuer unreachable: {exc}") from exc
        if response.status_code != 200:
            raise SignInFailed(f"token endpoint answered {response.status_code}: {response.text[:200]}")
        return response.json()

    async def finish(self, code: str, pending: dict) -> dict:
        """Exchange the code (with the PKCE verifier) and check both tokens; the session's login."""
        token = await self._token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": self.redirect_uri, "code_verifier": pending["verifier"]})
        return await self._login(token, expected_nonce=pending["nonce"])

    async def refresh(self, login: dict) -> dict:
        if not login.get("refresh_token"):
            raise SignInFailed("no refresh token")
        token = await self._token({"grant_type": "refresh_token", "refresh_token": login["refresh_token"]})
        token.setdefault("id_token", login.get("id_token"))
        return await self._login(token)

    async def _login(self, token: dict, expected_nonce: str | None = None) -> dict:
        try:
            principal = await self.access_verifier.verify(token["access_token"])
            if expected_nonce is not None:
                id_claims = (await self.id_verifier.verify(token["id_token"])).claims
                if id_claims.get("nonce") != expected_nonce or id_claims.get("sub") != principal.subject:
                    raise SignInFailed("id token does not belong to this sign-in")
        except (InvalidToken, KeyError) as exc:
            raise SignInFailed(str(exc)) from exc
        return {
            "access_token": token["access_token"], "refresh_token": token.get("refresh_token"),
            "id_token": token.get("id_token"),
            "expires_at": int(time.time()) + int(token.get("expires_in", 60)),
            "user": user_of(principal),
        }

    def logout_url(self, id_token: str | None) -> str:
        params = {"post_logout_redirect_uri": f"{self.settings.portal_public_url.rstrip('/')}/abgemeldet",
                  "client_id": self.settings.oidc_client_id}
        if id_token:
            params["id_token_hint"] = id_token
        return f"{self.settings.browser_issuer_url}{PROTOCOL}/logout?{urlencode(params)}"


def user_of(principal: Principal) -> dict:
    """What pages need to know of the signed-in user (kept in the session)."""
    roles = sorted(principal.roles)
    return {"sub": principal.subject, "username": principal.username, "email": principal.email,
            "roles": roles, "tenant": principal.tenant, "firm": principal.claims.get("firm"),
            "providers": list(principal.claims.get("providers") or [])}
