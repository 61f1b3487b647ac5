"""Offers (Angebote) with dated sessions (Termine), providers and visibility: types and rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, EmailStr, Field, model_validator

from contracts import OFFER_PUBLISHED, OFFER_UPDATED, OFFER_WITHDRAWN
from runtime.models import Day, StrictModel, single_line

TENANT_SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"
Line = Annotated[str, AfterValidator(single_line)]
"""A single-line text field (no line breaks or other control characters), its length set per field."""

KLDB_CODE = r"^[0-9]{3,5}$"  # KldB 2010: Berufsbereich … Berufsgattung, 3 to 5 digits
ESCO_SKILL = r"^http://data\.europa\.eu/esco/skill/[0-9a-f-]{36}$"
QCG_MIN_HOURS = 120  # §82 SGB III: funded training lasts more than 120 hours


class RuleBroken(Exception):
    """A business rule refuses the request (answered 422, naming the rule and the field)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(rule)
        self.field, self.rule = field, rule


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
    """A session's place; without coordinates it is geocoded offline from postcode or town."""

    street: Line | None = Field(default=None, max_length=200)
    zip: Line = Field(min_length=1, max_length=10)
    city: Line = Field(min_length=1, max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    lon: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)

    @model_validator(mode="after")
    def _both_coordinates_or_none(self) -> Location:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither (then the place is found from zip or city)")
        return self


class Session(StrictModel):
    """A dated session (Termin): own start, end and place; price and schedule where they differ."""

    external_id: Line | None = Field(default=None, max_length=200)
    start: Day
    end: Day | None = None
    location: Location | None = None
    price_eur: float | None = Field(default=None, ge=0, le=1_000_000, allow_inf_nan=False)
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> Session:
        if self.end is not None and self.end < self.start:
            raise ValueError("end lies before start")
        return self


class FundingFlag(StrEnum):
    bildungsgutschein = "bildungsgutschein"
    qcg = "qcg"
    aufstiegsbafoeg = "aufstiegsbafoeg"


class Funding(StrictModel):
    bildungsgutschein: bool = False
    qcg: bool = False
    aufstiegsbafoeg: bool = False


class Visibility(StrictModel):
    scope: Literal["home", "networks", "all"] = "home"
    # network ids only: "*" here read as "every network" in search but as a network of that name in
    # matching, and a string of any length was stored
    networks: list[Annotated[str, Field(pattern=TENANT_SLUG)]] = Field(default_factory=list, max_length=100)

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
    external_id: Line | None = Field(default=None, max_length=200)
    title: Line = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=50_000)
    skills: list[Annotated[Line, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    esco_skills: list[Annotated[str, Field(pattern=ESCO_SKILL)]] = Field(
        default_factory=list, max_length=100, description="ESCO skill URIs, optional")
    occupation_codes: list[Annotated[str, Field(pattern=KLDB_CODE)]] = Field(
        default_factory=list, max_length=20, description="KldB 2010 codes, optional")
    qualification: Qualification
    format: Format
    schedule: Schedule
    hours: float | None = Field(default=None, ge=0, le=10_000, allow_inf_nan=False,
                                description="Unterrichtsstunden")
    price_eur: float | None = Field(default=None, ge=0, le=1_000_000, allow_inf_nan=False)
    funding: Funding = Field(default_factory=Funding)
    measure_number: Line | None = Field(default=None, min_length=3, max_length=40, pattern=r"^[0-9A-Za-z/ .-]+$",
                                        description="Maßnahmenummer of the AZAV-approved measure (Bildungsgutschein)")
    url: Line | None = Field(default=None, max_length=500, pattern=r"^https?://")
    sessions: list[Session] = Field(min_length=1, max_length=500)
    visibility: Visibility = Field(default_factory=Visibility)
    language: Line = Field(default="de", min_length=2, max_length=8)
    status: Literal["draft", "published"] = "published"

    @model_validator(mode="after")
    def _located_sessions(self) -> OfferIn:
        if self.format in LOCATED_FORMATS and any(s.location is None for s in self.sessions):
            raise ValueError(f"every session of a {self.format.value} offer needs a location")
        return self


class Address(StrictModel):
    street: Line | None = Field(default=None, max_length=200)
    zip: Line | None = Field(default=None, max_length=10)
    city: Line | None = Field(default=None, max_length=200)
    country: Line | None = Field(default="DE", max_length=60)


class Azav(StrictModel):
    """AZAV certification (Akkreditierungs- und Zulassungsverordnung Arbeitsförderung)."""

    certified: bool
    valid_until: Day | None = None
    certifier: Line | None = Field(default=None, max_length=200)

    def valid_on(self, day: date) -> bool:
        return self.certified and (self.valid_until is None or self.valid_until >= day)


class ProviderIn(StrictModel):
    external_id: Line | None = Field(default=None, max_length=200)
    name: Line = Field(min_length=1, max_length=300)
    emails: list[EmailStr] = Field(min_length=1, max_length=20, description="contact e-mails")
    address: Address | None = None
    azav: Azav | None = None


class MembersIn(StrictModel):
    """The provider users (token subjects) who act for a provider."""

    members: list[Annotated[Line, Field(min_length=1, max_length=200)]] = Field(max_length=200)


class SharingIn(StrictModel):
    """Networks every published offer of this network is shared with, beyond its own visibility."""

    networks: list[Annotated[str, Field(pattern=TENANT_SLUG)]] = Field(max_length=100)


@dataclass(frozen=True)
class Acting:
    """Who acts: the tenant, the user's subject and the providers it may act for (None: all of
    the network's, for network_admin and operator)."""

    tenant: str
    subject: str
    providers: frozenset[str] | None
    username: str = ""  # for the audit log

    def for_provider(self, provider_id: object) -> bool:
        return self.providers is None or str(provider_id) in self.providers

    @property
    def setting(self) -> str:
        """The value of ``app.acting_providers`` that row-level security reads."""
        return "*" if self.providers is None else ",".join(sorted(self.providers))


def check_funding(offer: OfferIn, provider_azav: dict | None, today: date) -> None:
    """The funding flags an offer may carry (DESIGN: qcg needs AZAV and more than 120 hours). The
    certification must hold today and still when the offer's last session starts: an employer is
    told the course is fundable for whichever of its dates it books (store.revoke_qcg says the same
    in SQL for offers already written)."""
    if offer.funding.qcg:
        azav = Azav.model_validate(provider_azav) if provider_azav else None
        if azav is None or not azav.valid_on(today):
            raise RuleBroken("funding.qcg", "qcg (§82 SGB III) needs a valid AZAV certification of the provider")
        last_start = max(s.start for s in offer.sessions)
        if not azav.valid_on(last_start):
            raise RuleBroken("funding.qcg", f"qcg (§82 SGB III) needs the provider's AZAV certification to hold when"
                                            f" the last session starts ({last_start.isoformat()}); it ends on"
                                            f" {azav.valid_until.isoformat()}")
        if offer.hours is None or offer.hours <= QCG_MIN_HOURS:
            raise RuleBroken("funding.qcg", f"qcg (§82 SGB III) needs more than {QCG_MIN_HOURS} hours")


def offer_event_type_for(previous_status: str | None, status: str) -> str | None:
    """Which offer event a change publishes. Every status change is one; a published offer moved
    back to draft is an update whose state says ``draft`` (consumers drop it as not visible).
    Changes of a draft that stays a draft publish nothing: nobody outside its provider sees it."""
    if status == "published":
        return OFFER_UPDATED if previous_status == "published" else OFFER_PUBLISHED
    if status == "withdrawn":
        return OFFER_WITHDRAWN if previous_status != "withdrawn" else None
    if status == "draft" and previous_status in ("published", "withdrawn"):
        return OFFER_UPDATED
    return None
