"""Demands, the six hard constraints of DESIGN.md and the employer's share after § 82: plain rules, no I/O
(ranking and reasons are services/matching/relevance.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import EmailStr, Field, model_validator

from runtime.models import Day, Flag, Items, Line, Paragraphs, StrictModel
from runtime.places import haversine_km

LOCATED_FORMATS = frozenset({"presence", "hybrid", "blended"})


def as_date(value: Any) -> date:
    """A date, or an ISO date string (a time after it ignored), as a date."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])

FormatName = Literal["presence", "online", "hybrid", "blended", "distance"]
ScheduleName = Literal["full_time", "part_time", "evening", "weekend", "flexible"]


class Contact(StrictModel):
    name: Line(200) | None = None
    email: EmailStr | None = None
    phone: Line(50) | None = None


class Employer(StrictModel):
    name: Line(300, min_length=1)
    employees: int | None = Field(default=None, ge=1, le=1_000_000)
    zip: Line(10) | None = None
    city: Line(200) | None = None
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    contact: Contact | None = None
    share_contact: Flag = Field(default=False, description="consent to show the contact to matched providers")


class DemandIn(StrictModel):
    """The body of ``POST /v1/demands``."""

    employer: Employer
    title: Line(500, min_length=1)
    description: Paragraphs(20_000) = ""
    skills: Items(Line(200, min_length=1), 100) = Field(default_factory=list)
    participants: int = Field(ge=1, le=10_000)
    start_from: Day
    start_to: Day
    formats: Items(FormatName, 5, min_length=1)
    schedules: Items(ScheduleName, 5) = Field(default_factory=list)
    max_distance_km: float = Field(ge=0, le=1000)
    max_price_eur: float | None = Field(default=None, ge=0, le=1_000_000)
    funding_required: Flag = False
    firm: Line(100, min_length=1) | None = Field(
        default=None, description="the employer firm the demand is for (counsellors record demand on behalf of a "
                                  "firm; an employer's own firm comes from its sign-in)")

    @model_validator(mode="after")
    def _window(self) -> DemandIn:
        if self.start_to < self.start_from:
            raise ValueError("start_to lies before start_from")
        return self


def visible_to(offer: dict[str, Any], tenant: str) -> bool:
    visibility = offer["visibility"]
    return (
        offer["tenant"] == tenant
        or visibility["scope"] == "all"
        or (visibility["scope"] == "networks" and tenant in visibility.get("networks", []))
    )


@dataclass(frozen=True)
class Feasibility:
    violations: tuple[str, ...]
    session: dict[str, Any] | None = None  # the earliest session that satisfies timing and distance
    distance_km: float | None = None

    @property
    def ok(self) -> bool:
        return not self.violations


def check(offer: dict[str, Any], demand: dict[str, Any]) -> Feasibility:
    """The six hard constraints; an offer that breaks one is never returned."""
    violations = []
    if offer.get("status", "published") != "published" or not visible_to(offer, demand["tenant"]):
        violations.append("visibility")
    if offer["format"] not in demand["formats"]:
        violations.append("format")
    start_from, start_to = str(demand["start_from"]), str(demand["start_to"])
    in_window = sorted((s for s in offer["sessions"] if start_from <= s["start"] <= start_to),
                       key=lambda s: s["start"])
    chosen, distance = None, None
    if not in_window:
        violations.append("timing")
    elif offer["format"] in LOCATED_FORMATS:
        employer = demand["employer"]
        near = []
        for n, session in enumerate(in_window):
            loc = session.get("location")
            if loc is None:
                continue
            km = haversine_km(employer["lat"], employer["lon"], loc["lat"], loc["lon"])
            if km <= demand["max_distance_km"]:
                near.append((session["start"], km, n, session))
        if near:  # the earliest start, and of sessions starting that day the nearest (as the index search)
            _, distance, _, chosen = min(near)
        else:
            violations.append("distance")
    else:
        chosen = in_window[0]
    ceiling = demand.get("max_price_eur")
    if ceiling is not None and (offer.get("price_eur") or 0) > ceiling:
        violations.append("price")
    if demand["funding_required"] and not offer["funding"]["qcg"]:
        violations.append("funding")
    return Feasibility(tuple(violations), chosen if not violations else None, distance)


def employer_share(employees: int | None) -> float | None:
    """Share of the course fee the employer pays under §82 SGB III (before the 45+ waiver)."""
    if employees is None:
        return None
    if employees < 50:
        return 0.0
    return 0.5 if employees < 500 else 0.75
