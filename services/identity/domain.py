"""Tenants (regional networks) and who may see them."""

from __future__ import annotations

from pydantic import Field

from runtime.models import StrictModel

SEED_TENANTS = {
    "hellweg-hochsauerland": "Bildungsraum Hellweg-Hochsauerland",
    "westfaelisches-ruhrgebiet": "Bildungsraum Westfälisches Ruhrgebiet",
    "lueneburg": "Bildungsraum Lüneburg/Nordostniedersachsen",
}


class CreateTenant(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$", description="slug, e.g. `ostwestfalen-lippe`")
    name: str = Field(min_length=1, max_length=200)
