"""Tenants (regional networks), their members and the audit of administrative actions: types and
rules, no I/O."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, EmailStr, Field, model_validator

from runtime.models import Items, Line, StrictModel

SEED_TENANTS = {
    "hellweg-hochsauerland": "Bildungsraum Hellweg-Hochsauerland",
    "westfaelisches-ruhrgebiet": "Bildungsraum Westfälisches Ruhrgebiet",
    "lueneburg": "Bildungsraum Lüneburg/Nordostniedersachsen",
}
TENANT_SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"
# Roles a network admin may give; `operator` is the platform's, never a network's.
NETWORK_ROLES = ("network_admin", "counselor", "provider", "employer")


class TenantSettings(StrictModel):
    name: Line(200, min_length=1)
    logo_url: AnyHttpUrl | None = Field(default=None, description="the network's logo, shown in pages and mail")
    imprint_url: AnyHttpUrl | None = Field(default=None, description="Impressum")
    privacy_url: AnyHttpUrl | None = Field(default=None, description="Datenschutzerklärung")


class CreateTenant(TenantSettings):
    id: str = Field(pattern=TENANT_SLUG, description="slug, e.g. `ostwestfalen-lippe`")


class InviteMember(StrictModel):
    email: EmailStr
    first_name: Line(100) = ""
    last_name: Line(100) = ""
    role: Literal["network_admin", "counselor", "provider", "employer"]
    username: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{2,62}$",
                                 description="defaults to the e-mail's local part and the tenant")
    providers: Items(Line(64, min_length=1), 50) = Field(
        default_factory=list, description="catalog provider ids a provider user acts for")
    firm: Line(100, min_length=1) | None = Field(default=None, description="the employer's firm id")

    @model_validator(mode="after")
    def _memberships_fit_the_role(self) -> InviteMember:
        if self.providers and self.role != "provider":
            raise ValueError("only a provider user acts for providers")
        if self.firm and self.role != "employer":
            raise ValueError("only an employer user belongs to a firm")
        return self


def default_username(email: str, tenant: str) -> str:
    local = "".join(c if c.isalnum() or c in "._-" else "-" for c in email.split("@")[0].lower())
    return f"{tenant}-{local}"[:63]
