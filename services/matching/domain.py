"""Demands, the six hard constraints of DESIGN.md, relevance and reasons: plain rules, no I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import EmailStr, Field, model_validator

from runtime.models import Flag, Items, Line, Paragraphs, StrictModel
from runtime.places import haversine_km

LOCATED_FORMATS = frozenset({"presence", "hybrid", "blended"})
MIN_SCORE = 0.12  # below this an offer fits the rules but not the need: no match announced

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
    start_from: date
    start_to: date
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
        for session in in_window:
            loc = session.get("location")
            if loc is None:
                continue
            km = haversine_km(employer["lat"], employer["lon"], loc["lat"], loc["lon"])
            if km <= demand["max_distance_km"]:
                chosen, distance = session, km
                break
        if chosen is None:
            violations.append("distance")
    else:
        chosen = in_window[0]
    ceiling = demand.get("max_price_eur")
    if ceiling is not None and (offer.get("price_eur") or 0) > ceiling:
        violations.append("price")
    if demand["funding_required"] and not offer["funding"]["qcg"]:
        violations.append("funding")
    return Feasibility(tuple(violations), chosen if not violations else None, distance)


# ---- relevance -------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    "und oder der die das den dem des ein eine einer eines einem einen fuer mit von zu zum zur im in am an auf"
    " aus bei bis ist sind wird werden wir sie ihr unsere unser sollen soll koennen kann nach als auch nicht"
    " sich es so wie gern gerne etwa ca pro per bzw oder sowie ueber unter durch the and for of kurs kurse"
    " mitarbeiter mitarbeitende beschaeftigte kollegen kolleginnen".split()
)
_SUFFIXES = ("ungen", "ung", "heiten", "keiten", "heit", "keit", "lich", "isch", "ern", "en", "er", "es", "e", "n", "s")


def _fold(text: str) -> str:
    text = text.lower().replace("ß", "ss")
    for umlaut, folded in (("ä", "ae"), ("ö", "oe"), ("ü", "ue")):
        text = text.replace(umlaut, folded)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def stem(token: str) -> str:
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 4:
            return token[: -len(suffix)]
    return token


def terms(text: str) -> list[str]:
    return [stem(t) for t in re.findall(r"[a-z0-9]+", _fold(text)) if t not in _STOPWORDS and len(t) > 1]


def _covered(term: str, offer_terms: set[str]) -> float:
    """1 for the same stem; 0.5 when one is part of the other (German compounds: schweiss in
    schutzgasschweiss), counted only for parts of five letters or more."""
    if term in offer_terms:
        return 1.0
    if len(term) >= 5 and any(term in t or (len(t) >= 5 and t in term) for t in offer_terms):
        return 0.5
    return 0.0


def relevance(offer: dict[str, Any], demand: dict[str, Any]) -> tuple[float, list[str]]:
    """Weighted share of the demand's terms the offer covers, skills counted whole; returns the
    score in [0, 1] and the demand skills the offer covers."""
    offer_terms = set(terms(" ".join([offer["title"], " ".join(offer["skills"]), offer.get("description", "")])))
    matched_skills = []
    skill_score = 0.0
    for skill in demand["skills"]:
        skill_terms = terms(skill)
        if not skill_terms:
            continue
        coverage = sum(_covered(t, offer_terms) for t in skill_terms) / len(skill_terms)
        skill_score += coverage
        if coverage >= 0.5:
            matched_skills.append(skill)
    skill_share = skill_score / len(demand["skills"]) if demand["skills"] else 0.0
    weighted: dict[str, float] = {}
    for text, weight in ((demand["title"], 2.0), (demand.get("description", ""), 1.0)):
        for term in terms(text):
            weighted[term] = max(weighted.get(term, 0.0), weight)
    total = sum(weighted.values())
    text_share = sum(w * _covered(t, offer_terms) for t, w in weighted.items()) / total if total else 0.0
    score = 0.55 * skill_share + 0.45 * text_share if demand["skills"] else text_share
    return round(score, 4), matched_skills


def employer_share(employees: int | None) -> float | None:
    """Share of the course fee the employer pays under §82 SGB III (before the 45+ waiver)."""
    if employees is None:
        return None
    if employees < 50:
        return 0.0
    return 0.5 if employees < 500 else 0.75


def evaluate(offer: dict[str, Any], demand: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
    """Score and readable reasons when the offer satisfies every hard constraint and fits the need."""
    feasibility = check(offer, demand)
    if not feasibility.ok:
        return None
    score, skills = relevance(offer, demand)
    if score < MIN_SCORE:
        return None
    session = feasibility.session or {}
    reasons: dict[str, Any] = {
        "skills": skills,
        "start": session.get("start"),
        "place": (session.get("location") or {}).get("city"),
        "distance_km": round(feasibility.distance_km, 1) if feasibility.distance_km is not None else None,
        "format": offer["format"],
        "schedule_preferred": offer["schedule"] in demand.get("schedules", []) if demand.get("schedules") else None,
        "price_eur": offer.get("price_eur"),
        "funding": offer["funding"],
    }
    share = employer_share(demand["employer"].get("employees"))
    if offer["funding"]["qcg"] and share is not None and offer.get("price_eur") is not None:
        reasons["employer_cost_eur_after_qcg"] = round(offer["price_eur"] * share, 2)
    if reasons["schedule_preferred"]:
        score = min(1.0, score + 0.05)  # schedule is a soft preference
    return round(score, 4), reasons
