"""Offers (Angebote) with dated sessions (Termine), providers and visibility: types and rules, no I/O."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import EmailStr, Field, model_validator

from contracts import OFFER_PUBLISHED, OFFER_UPDATED, OFFER_WITHDRAWN
from runtime.models import StrictModel

TENANT_SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"


class Qualification(StrEnum):
    certificate = "certificate"
    partial_qualification = "partial_qualification"
    retraining = "retraining"
    advancement = "advancement"
    adaptation = "adaptation"
    language = "language"


class Format(StrEnum):
    presence = "presence"
    online = "online"
    hybrid = "hybrid"
    blended = "blended"
    distance = "distance"


class Schedule(StrEnum):
    full_time = "full_time"
    part_time = "part_time"
    evening = "evening"
    weekend = "weekend"
    flexible = "flexible"


LOCATED_FORMATS = frozenset({Format.presence, Format.hybrid, Format.blended})


class Location(StrictModel):
    zip: str = Field(min_length=1, max_length=10)
    city: str = Field(min_length=1, max_length=200)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Session(StrictModel):
    start: date
    end: date | None = None
    location: Location | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> Session:
        if self.end is not None and self.end < self.start:
            raise ValueError("end lies before start")
        return self


class Funding(StrictModel):
    bildungsgutschein: bool = False
    qcg: bool = False
    aufstiegsbafoeg: bool = False


class Visibility(StrictModel):
    scope: Literal["home", "networks", "all"] = "home"
    networks: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _networks_match_scope(self) -> Visibility:
        if self.scope == "networks" and not self.networks:
            raise ValueError("scope 'networks' needs at least one network")
        if self.scope != "networks" and self.networks:
            raise ValueError("networks are only listed with scope 'networks'")
        return self


class OfferIn(StrictModel):
    """The offer body of ``POST /v1/offers`` and ``PUT /v1/offers/{id}``."""

    provider_id: UUID
    external_id: str | None = Field(default=None, max_length=200)
    title: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=50_000)
    skills: list[str] = Field(default_factory=list, max_length=100)
    qualification: Qualification
    format: Format
    schedule: Schedule
    hours: float | None = Field(default=None, ge=0, le=10_000)
    price_eur: float | None = Field(default=None, ge=0, le=1_000_000)
    funding: Funding = Field(default_factory=Funding)
    sessions: list[Session] = Field(min_length=1, max_length=500)
    visibility: Visibility = Field(default_factory=Visibility)
    language: str = Field(default="de", min_length=2, max_length=8)
    status: Literal["draft", "published"] = "published"

    @model_validator(mode="after")
    def _located_sessions(self) -> OfferIn:
        if self.format in LOCATED_FORMATS and any(s.location is None for s in self.sessions):
            raise ValueError(f"every session of a {self.format.value} offer needs a location")
        return self


class ProviderIn(StrictModel):
    external_id: str | None = Field(default=None, max_length=200)
    name: str = Field(min_length=1, max_length=300)
    emails: list[EmailStr] = Field(min_length=1, max_length=20)
    address: dict | None = None
    azav: dict | None = Field(default=None, description='e.g. {"certified": true, "valid_until": "2027-12-31"}')


def offer_event_type_for(previous_status: str | None, status: str) -> str | None:
    """Which offer event a status change publishes; drafts publish nothing."""
    if status == "published":
        return OFFER_UPDATED if previous_status == "published" else OFFER_PUBLISHED
    if status == "withdrawn" and previous_status == "published":
        return OFFER_WITHDRAWN
    return None
