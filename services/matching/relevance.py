"""Ranking by meaning and announcing: how well a feasible offer serves a demand, and which pairs are
worth a provider's time. Plain functions over records and vectors; no I/O, and no model is loaded at
import (``load_encoder()`` builds it on first call).

Signals of one (demand, offer) pair, all in [0, 1]:
  meaning  cosine of the e5 vectors (demand as ``query``, offer as ``passage``), rescaled from the
           band where e5-small's cosines live;
  words    share of the demand's terms that the offer's text contains, German-folded (ä→ae, ß→ss),
           lightly stemmed, compounds met by substring of long terms ("stapler" in
           "gabelstaplerfahrer"), title terms weighted double;
  skills   share of the demand's skills that the offer covers;
and small soft preferences: preferred schedule, nearer place, earlier start in the window.
The score of a pair depends on that pair only, so an offer re-evaluated alone scores as it does
among all candidates.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np

from services.matching.domain import Feasibility, employer_share

MAX_MATCHES_PER_DEMAND = 10
MATCH_THRESHOLD = 0.55  # calibrated on the graded sets, see README "Ranking and announcing"


class Encoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str], kind: Literal["query", "passage"]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised."""
        ...


def load_encoder() -> Encoder:
    """The process's sentence encoder, built on first call and cached (never at import)."""
    from services.matching.encoder import load_e5

    return load_e5()


def _joined(*parts: str) -> str:
    return "\n".join(p.strip() for p in parts if p and p.strip())


def offer_text(offer: dict[str, Any]) -> str:
    """What an offer is encoded from: title, skills, description."""
    return _joined(offer.get("title", ""), ", ".join(offer.get("skills") or []), offer.get("description", ""))


def demand_text(demand: dict[str, Any]) -> str:
    """What a demand is encoded from: title, skills, description."""
    return _joined(demand.get("title", ""), ", ".join(demand.get("skills") or []), demand.get("description", ""))


# ---- words -----------------------------------------------------------------------------------

# Function words and the words every course text uses (they say nothing about the topic).
_STOPWORDS = frozenset(
    "und oder der die das den dem des ein eine einer eines einem einen fuer mit von zu zum zur im in am an auf"
    " aus bei bis ist sind wird werden wurde wir sie ihr ihre ihren unsere unser unseren unserer sollen soll"
    " koennen kann nach als auch nicht sich es so wie gern gerne etwa ca pro per bzw sowie ueber unter durch"
    " dass damit denn doch noch nur schon sehr mehr alle allen jede jeden jeder neue neuen bisher kuenftig"
    " the and for of to"
    " kurs kurse kurses lehrgang lehrgangs schulung schulungen seminar seminare training trainings"
    " weiterbildung weiterbildungen fortbildung qualifizierung qualifikation teilnehmende teilnehmer"
    " teilnehmerinnen mitarbeiter mitarbeiterin mitarbeitende mitarbeitenden beschaeftigte beschaeftigten"
    " kollegen kolleginnen wochen woche tage tag stunden monate start beginn ende inhalte ziel thema themen"
    " grundlagen praxis praktisch praktische theorie abschluss zertifikat teilzeit vollzeit online"
    " betrieb betriebe unternehmen firma gmbh euro person personen brauchen suchen moechten wollen".split()
)
_SUFFIXES = ("ungen", "ung", "heiten", "keiten", "heit", "keit", "innen", "in", "ern", "en", "er", "es", "e",
             "n", "s")
_TOKEN = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    text = text.lower().replace("ß", "ss")
    for umlaut, folded in (("ä", "ae"), ("ö", "oe"), ("ü", "ue")):
        text = text.replace(umlaut, folded)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _stem(token: str) -> str:
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 4:
            return token[: -len(suffix)]
    return token


@lru_cache(maxsize=65536)
def _term(token: str) -> str:
    return _stem(token)


def terms(text: str) -> list[str]:
    return [_term(t) for t in _TOKEN.findall(fold(text)) if t not in _STOPWORDS and len(t) > 1]


def _covered(term: str, offer_terms: frozenset[str], offer_blob: str) -> float:
    """1 for the same term; 0.6 when a term of five letters or more is part of a compound of the
    other side ("stapler" in "gabelstaplerfahrer", "schweiss" in "schutzgasschweiss")."""
    if term in offer_terms:
        return 1.0
    if len(term) >= 5 and term in offer_blob:
        return 0.6
    if len(term) >= 8 and any(len(t) >= 5 and t in term for t in offer_terms):
        return 0.6
    return 0.0


@dataclass(frozen=True)
class _OfferWords:
    terms: frozenset[str]
    blob: str


def _offer_words(offer: dict[str, Any]) -> _OfferWords:
    found = terms(offer_text(offer))
    return _OfferWords(frozenset(found), " " + " ".join(found) + " ")


@dataclass(frozen=True)
class _DemandWords:
    weighted: dict[str, float]
    skills: list[tuple[str, list[str]]]


def _demand_words(demand: dict[str, Any]) -> _DemandWords:
    weighted: dict[str, float] = {}
    for text, weight in ((demand.get("description", ""), 1.0), (" ".join(demand.get("skills") or []), 1.5),
                         (demand.get("title", ""), 2.0)):
        for term in terms(text):
            weighted[term] = max(weighted.get(term, 0.0), weight)
    skills = [(s, terms(s)) for s in demand.get("skills") or []]
    return _DemandWords(weighted, [(s, t) for s, t in skills if t])


def _words_score(dw: _DemandWords, ow: _OfferWords) -> tuple[float, float, list[str]]:
    total = sum(dw.weighted.values())
    text = sum(w * _covered(t, ow.terms, ow.blob) for t, w in dw.weighted.items()) / total if total else 0.0
    matched, skill_sum = [], 0.0
    for skill, skill_terms in dw.skills:
        coverage = sum(_covered(t, ow.terms, ow.blob) for t in skill_terms) / len(skill_terms)
        skill_sum += coverage
        if coverage >= 0.5:
            matched.append(skill)
    skills = skill_sum / len(dw.skills) if dw.skills else text
    return text, skills, matched


# ---- the score -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    meaning: float = 0.6
    words: float = 0.25
    skills: float = 0.15
    cos_low: float = 0.78   # e5-small cosines of unrelated German course texts sit about here
    cos_high: float = 0.92  # and of the same need in other words about here
    schedule: float = 0.03
    distance: float = 0.03  # at most this much off for a place at the demand's distance limit
    start: float = 0.02     # at most this much off for a start at the end of the window


WEIGHTS = Weights()


@dataclass
class Ranked:
    offer_id: str
    provider_id: str
    score: float
    reasons: dict[str, Any] = field(default_factory=dict)


def _provider_id(offer: dict[str, Any]) -> str:
    if offer.get("provider_id"):
        return str(offer["provider_id"])
    provider = offer.get("provider") or {}
    return str(provider.get("id") or offer.get("id"))


def _window_share(demand: dict[str, Any], start: str | None) -> float:
    """Where the chosen session starts in the demand's window: 0 at its opening, 1 at its end."""
    if not start:
        return 0.0
    try:
        lo, hi = date.fromisoformat(str(demand["start_from"])), date.fromisoformat(str(demand["start_to"]))
        at = date.fromisoformat(str(start)[:10])
    except (KeyError, ValueError):
        return 0.0
    span = (hi - lo).days
    return min(1.0, max(0.0, (at - lo).days / span)) if span > 0 else 0.0


def reasons_for(offer: dict[str, Any], demand: dict[str, Any], feasibility: Feasibility,
                skills: list[str]) -> dict[str, Any]:
    """The reasons a person reads (the portal and the mails use these keys)."""
    session = feasibility.session or {}
    schedules = demand.get("schedules") or []
    reasons: dict[str, Any] = {
        "skills": skills,
        "start": session.get("start"),
        "place": (session.get("location") or {}).get("city"),
        "distance_km": round(feasibility.distance_km, 1) if feasibility.distance_km is not None else None,
        "format": offer["format"],
        "schedule_preferred": offer.get("schedule") in schedules if schedules else None,
        "price_eur": offer.get("price_eur"),
        "funding": offer["funding"],
    }
    share = employer_share((demand.get("employer") or {}).get("employees"))
    if offer["funding"].get("qcg") and share is not None and offer.get("price_eur") is not None:
        reasons["employer_cost_eur_after_qcg"] = round(offer["price_eur"] * share, 2)
    return reasons


def _score(demand: dict[str, Any], offer: dict[str, Any], feasibility: Feasibility, cosine: float,
           dw: _DemandWords, w: Weights) -> tuple[float, dict[str, Any]]:
    text, skills, matched = _words_score(dw, _offer_words(offer))
    meaning = min(1.0, max(0.0, (cosine - w.cos_low) / (w.cos_high - w.cos_low)))
    score = w.meaning * meaning + w.words * text + w.skills * skills
    reasons = reasons_for(offer, demand, feasibility, matched)
    if reasons["schedule_preferred"]:
        score += w.schedule
    if feasibility.distance_km is not None and demand.get("max_distance_km"):
        score -= w.distance * min(1.0, feasibility.distance_km / float(demand["max_distance_km"]))
    score -= w.start * _window_share(demand, reasons["start"])
    score = round(min(1.0, max(0.0, score)), 4)
    reasons["relevance"] = {"meaning": round(meaning, 3), "words": round(text, 3), "skills": round(skills, 3)}
    return score, reasons


def rank(demand: dict[str, Any], candidates: Sequence[tuple[dict[str, Any], Feasibility, np.ndarray]],
         demand_vector: np.ndarray, weights: Weights | None = None) -> list[Ranked]:
    """Every feasible candidate (``domain.check`` passed), best first (ties: offer id)."""
    w = weights or WEIGHTS
    dw = _demand_words(demand)
    query = np.asarray(demand_vector, dtype=np.float32).reshape(-1)
    out = []
    for offer, feasibility, vector in candidates:
        if not feasibility.ok:
            continue  # never ranked, whatever the caller passed
        cosine = float(np.dot(np.asarray(vector, dtype=np.float32).reshape(-1), query))
        if not math.isfinite(cosine):
            cosine = 0.0
        score, reasons = _score(demand, offer, feasibility, cosine, dw, w)
        out.append(Ranked(str(offer["id"]), _provider_id(offer), score, reasons))
    out.sort(key=lambda r: (-r.score, r.offer_id))
    return out


def announce(ranked: list[Ranked], threshold: float | None = None) -> list[Ranked]:
    """The matches of one demand: at or above the threshold, one per provider (its best offer), at most
    MAX_MATCHES_PER_DEMAND, best first. ``ranked`` is the demand's whole ranking (as ``rank`` gives it)."""
    limit = MATCH_THRESHOLD if threshold is None else threshold
    out, providers = [], set()
    for item in sorted(ranked, key=lambda r: (-r.score, r.offer_id)):
        if item.score < limit:
            break
        if item.provider_id in providers:
            continue
        providers.add(item.provider_id)
        out.append(item)
        if len(out) == MAX_MATCHES_PER_DEMAND:
            break
    return out
