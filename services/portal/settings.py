"""The portal's typed settings (prefix ``BR_``): where the services and the issuer are, and how
sessions are kept."""

from __future__ import annotations

from runtime.settings import ServiceSettings


class PortalSettings(ServiceSettings):
    service: str = "portal"
    http_port: int = 8000

    catalog_url: str = "http://127.0.0.1:8001"
    matching_url: str = "http://127.0.0.1:8002"
    notifications_url: str = "http://127.0.0.1:8003"
    identity_url: str = "http://127.0.0.1:8004"
    # Where browsers reach the portal (redirect URIs); the issuer as browsers reach it may differ
    # from the one the portal talks to inside a cluster.
    portal_public_url: str = "http://127.0.0.1:8000"
    issuer_public_url: str | None = None
    oidc_client_id: str = "bildungsraum-portal"
    oidc_client_secret: str | None = None  # a public client with PKCE needs none

    cache_dir: str = "var/cache"  # derived data (the German place index), rebuilt when missing
    session_ttl_seconds: int = 1800  # as Keycloak's SSO session idle
    anonymous_session_ttl_seconds: int = 7200
    backend_timeout_seconds: float = 10.0
    public_requests_per_hour: int = 10  # public demand form, per client address

    @property
    def secure_cookies(self) -> bool:
        """``Secure`` outside dev and test (which run on plain http://127.0.0.1)."""
        return self.env == "production"

    @property
    def browser_issuer_url(self) -> str:
        return (self.issuer_public_url or self.issuer_url).rstrip("/")
