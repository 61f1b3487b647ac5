"""What protects every page: security headers with a CSP that allows no inline script, CSRF tokens
on every form, and a ``next=`` that can only point back into the portal."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Request
from starlette.datastructures import FormData

from services.portal.sessions import Session

MAX_FORM_BYTES = 2 * 1024 * 1024  # the open-Qcat upload is the biggest form


class CsrfRefused(Exception):
    """A form arrived without this session's CSRF token."""


def content_security_policy(issuer_origin: str) -> str:
    return "; ".join([
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "font-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
        f"form-action 'self' {issuer_origin}",  # the sign-out form ends at the issuer
        "frame-ancestors 'none'",
    ])


def security_headers(issuer_origin: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(issuer_origin),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Permissions-Policy": "geolocation=(), camera=(), microphone=()",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


async def checked_form(request: Request, session: Session) -> FormData:
    """The submitted form, once its CSRF token matches the session's; else CsrfRefused."""
    form = await request.form(max_part_size=MAX_FORM_BYTES)
    sent = form.get("csrf_token")
    expected = session.get("csrf")
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        raise CsrfRefused()
    return form


def safe_next(target: str | None, default: str = "/mein-bereich") -> str:
    """Only a path of this portal: no scheme, no host, no protocol-relative ``//`` or ``/\\``."""
    if not target or len(target) > 2000:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(c in target for c in "\r\n\t\\") or any(ord(c) < 32 for c in target):
        return default
    return target
