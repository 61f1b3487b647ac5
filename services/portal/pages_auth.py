"""Sign-in and sign-out: authorization code flow with PKCE, a fresh session id at sign-in, no
redirect off-site after it, and sign-out that ends the issuer's session too."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request

from services.portal import domain
from services.portal.oidc import SignInFailed
from services.portal.security import checked_form, safe_next
from services.portal.web import PortalDep, SessionDep, error_page, redirect, render, signed_in

router = APIRouter()


@router.get("/anmelden", summary="Sign in at the issuer")
async def sign_in(request: Request, portal: PortalDep, session: SessionDep, next: str | None = None):
    url, pending = portal.oidc.start()
    pending["next"] = safe_next(next)
    session.set("oidc", pending)
    return redirect(url, 302)


@router.get("/auth/callback", summary="The issuer returns here")
async def callback(request: Request, portal: PortalDep, session: SessionDep, code: str | None = None,
                   state: str | None = None, error: str | None = None):
    pending = session.pop("oidc")
    if error or not code or not pending or not state or not hmac.compare_digest(state, pending["state"]):
        return error_page(request, 400, "Anmeldung nicht abgeschlossen",
                          "Die Anmeldung wurde abgebrochen oder war veraltet. Melden Sie sich noch einmal an.")
    try:
        login = await portal.oidc.finish(code, pending)
    except SignInFailed:
        return error_page(request, 400, "Anmeldung fehlgeschlagen",
                          "Die Anmeldung konnte nicht bestätigt werden. Melden Sie sich noch einmal an.")
    fresh = await portal.sessions.rotate(session)  # no session fixation: a new id once signed in
    fresh.set("login", login)
    fresh.set("user", login["user"])
    fresh.data.pop("csrf", None)  # a new CSRF token with the new session
    request.state.session = fresh
    target = pending.get("next") or "/mein-bereich"
    return redirect(target if target != "/mein-bereich" else domain.home_of(login["user"]))


@router.get("/mein-bereich", summary="The signed-in user's start page")
async def my_area(me=signed_in()):
    return redirect(domain.home_of(me.user))


@router.post("/abmelden", summary="Sign out here and at the issuer")
async def sign_out(request: Request, portal: PortalDep, session: SessionDep):
    await checked_form(request, session)
    login = session.get("login") or {}
    await portal.sessions.delete(session)
    session.data.clear()
    session.changed = False
    session.ended = True
    return redirect(portal.oidc.logout_url(login.get("id_token")))


@router.get("/abgemeldet", summary="After signing out")
async def signed_out(request: Request):
    return render(request, "signed_out.html", title="Abgemeldet")
