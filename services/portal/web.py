"""What every page shares: the portal's state (settings and adapters, built in the lifespan),
the session and security-header middleware, sign-in and role guards, German error pages."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import httpx
import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from runtime.places import Gazetteer
from services.portal import domain
from services.portal.backends import BackendMissing, BackendNotFound, Backends
from services.portal.kept import Kept
from services.portal.oidc import OidcClient, SignInFailed
from services.portal.sessions import Session, SessionStore
from services.portal.settings import PortalSettings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


@dataclass
class Portal:
    """The portal's adapters, wired once per process in the lifespan."""

    settings: PortalSettings
    http: httpx.AsyncClient
    redis: aioredis.Redis
    backends: Backends
    oidc: OidcClient
    sessions: SessionStore
    gazetteer: Gazetteer
    templates: Jinja2Templates
    networks: Kept = field(default_factory=lambda: Kept(ttl=60, service="identity"))  # each network's public face
    providers: Kept = field(default_factory=lambda: Kept(ttl=60, service="catalog"))  # each network's provider list

    async def tenant(self, tenant_id: str) -> dict | None:
        """The network's public face (name, imprint) from identity; None when there is no such network."""
        async def fetch() -> dict | None:
            try:
                return await self.backends.get("identity", f"/v1/public/tenants/{quote(tenant_id, safe='')}")
            except BackendNotFound:
                return None

        return await self.networks.get(tenant_id, fetch)

    async def tenant_list(self) -> list[dict]:
        try:
            return (await self.backends.get("identity", "/v1/public/tenants"))["items"]
        except BackendMissing:
            return []


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # .html: autoescaped
    env = templates.env
    env.filters.update(german_date=domain.german_date, german_datetime=domain.german_datetime, euro=domain.euro,
                       earliest=domain.earliest,
                       items_by_id=lambda items: {i["id"]: i["name"] for i in items},
                       names_in=lambda keys, names: ", ".join(names[k] for k in keys if k in names))
    env.globals.update(FORMATS=domain.FORMATS, SCHEDULES=domain.SCHEDULES, QUALIFICATIONS=domain.QUALIFICATIONS,
                       FUNDINGS=domain.FUNDINGS, RADII=domain.RADII, ROLE_NAMES=domain.ROLE_NAMES,
                       urlencode=lambda pairs: urlencode(pairs, doseq=True))
    return templates


async def get_portal(request: Request) -> Portal:
    return request.app.state.portal


async def get_session(request: Request) -> Session:
    return request.state.session


PortalDep = Annotated[Portal, Depends(get_portal)]
SessionDep = Annotated[Session, Depends(get_session)]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    portal: Portal = request.app.state.portal
    session: Session = request.state.session
    context.update(request=request, user=session.user, csrf_token=LazyCsrf(session),
                   flash=session.pop("flash"), tenant_info=context.get("tenant_info"))
    return portal.templates.TemplateResponse(request, template, context, status_code=status)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", status, title=title, message=message)


class LazyCsrf:
    """The session's CSRF token, made only when a page has a form: an anonymous visitor who only
    reads gets no session at all."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __str__(self) -> str:
        return self.session.csrf_token

    def __html__(self) -> str:
        return self.session.csrf_token


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Forbidden(Exception):
    pass


@dataclass
class Me:
    """The signed-in user acting through the portal, with a fresh access token."""

    user: dict
    token: str
    session: Session

    @property
    def tenant(self) -> str | None:
        return self.user.get("tenant")

    def has(self, *roles: str) -> bool:
        return bool(set(self.user.get("roles", [])) & set(roles))


def signed_in(*roles: str):
    async def dependency(request: Request, portal: PortalDep, session: SessionDep) -> Me:
        login = session.get("login")
        if not login:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(target)
        if login["expires_at"] - time.time() < 30:
            try:
                login = await portal.oidc.refresh(login)
            except SignInFailed:
                session.pop("login")
                session.pop("user")
                raise SignInRequired(request.url.path) from None
            session.set("login", login)
            session.set("user", login["user"])
        me = Me(login["user"], login["access_token"], session)
        if roles and not me.has(*roles):
            raise Forbidden()
        return me

    return Depends(dependency)


def redirect(url: str, status: int = 303) -> RedirectResponse:
    return RedirectResponse(url, status_code=status)
