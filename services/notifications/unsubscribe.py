"""Unsubscribe links: signed (HMAC-SHA256 by itsdangerous, a well-kept library that compares in
constant time) and scoped to one recipient address of one owner, so a link forwarded or altered
can unsubscribe nobody else. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from itsdangerous import BadData, URLSafeSerializer

_SALT = "bildungsraum.notifications.unsubscribe.v1"


@dataclass(frozen=True)
class Recipient:
    tenant: str
    owner_kind: str  # provider | employer
    owner_id: str
    address: str


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT)


def sign(secret: str, recipient: Recipient) -> str:
    return _serializer(secret).dumps([recipient.tenant, recipient.owner_kind, recipient.owner_id, recipient.address])


def verify(secret: str, token: str) -> Recipient | None:
    """The recipient a genuine token names; None for anything forged, altered or malformed."""
    try:
        value = _serializer(secret).loads(token)
    except BadData:  # a bad signature, or a payload that does not decode
        return None
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, str) for v in value)):
        return None
    if value[1] not in ("provider", "employer"):
        return None
    return Recipient(*value)


def unsubscribe_url(public_base_url: str, token: str) -> str:
    return f"{public_base_url.rstrip('/')}/v1/unsubscribe?token={quote(token)}"
