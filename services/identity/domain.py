"""Tenants (regional networks) and who may see them."""

from __future__ import annotations

from pydantic import Field

from runtime.models import Line, StrictModel

SEED_TENANTS = {
    "hellweg-hochsauerland": "Bildungsraum Hellweg-Hochsauerland",
    "westfaelisches-ruhrgebiet": "Bildungsraum Westfälisches Ruhrgebiet",
    "lueneburg": "Bildungsraum Lüneburg/Nordostniedersachsen",
}


class CreateTenant(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$", description="slug, e.g. `ostwestfalen-lippe`")
    name: Line(200, min_length=1)
