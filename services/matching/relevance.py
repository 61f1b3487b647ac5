"""Ranking by meaning and announcing: how well a feasible offer serves a demand, and which pairs are
worth a provider's time. Plain functions over records and vectors; no I/O, and no model is loaded at
import (``load_encoder()`` builds it on first call).

Meaning: the sentence encoder (multilingual-e5-small) encodes the demand as a ``query`` (title, skills,
description) and each offer as a ``passage`` (skills and description: what is taught; the title is
left out because titles echo the words employers use while serving other needs, see README).
``expand_query`` then moves the demand's vector towards the centroid of its best few candidates
(pseudo-relevance feedback, Rocchio): offers that say the same thing in other words sit close to
each other, lexical look-alikes that serve other needs scatter. The expanded vector is computed once
per (re)matching of a demand and is what ``rank`` gets, so a pair's score depends on that pair and
that vector only: an offer re-evaluated alone scores as it does among all candidates.

Words (German-folded, lightly stemmed, compounds met by substring of long terms) name the demand's
skills an offer covers in the reasons; in the score they only break near-ties, because on the graded
sets they reward the look-alikes (README). Soft preferences (schedule, distance, start date) nudge.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np

from services.matching.domain import Feasibility, as_date, employer_share

# At most this many matches per demand: the precision of a demand's first places falls after the second
# (README "Matching quality": on both graded sets every first and second place is relevant, a third
# place only in 54 of 60), and a provider mailed about an unrelated demand unsubscribes.
MAX_MATCHES_PER_DEMAND = 2
# What makes a pair a match (calibrated on the graded sets, see README "Matching quality"):
MATCH_THRESHOLD = 0.4  # the score (read on the expanded vector) at least this,
MATCH_MARGIN = 0.32  # at most this far below the demand's best offer,
MATCH_FLOOR = 0.855  # and the pair's own cosine (the demand's plain vector, no feedback) at least this


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
    """What an offer is encoded from: its skills and description (what is taught). The title joins
    them only when the description is too short to say what the course is."""
    description = offer.get("description", "") or ""
    title = offer.get("title", "") if len(description.split()) < 25 else ""
    return _joined(title, ", ".join(offer.get("skills") or []), description)


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
    return _words_of_text(offer_text(offer))


# An offer's words are ranked against every demand that can see it: worked out once per text, not
# once per ranking (folding and stemming a description took most of a ranking's time per offer).
@lru_cache(maxsize=100_000)
def _words_of_text(text: str) -> _OfferWords:
    found = terms(text)
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
    feedback_k: int = 8        # expand_query: how many of the best candidates form the centroid
    feedback_beta: float = 3.0  # and how strongly the demand's vector moves towards it
    feedback_floor: float = 0.83  # only candidates whose own cosine reaches this take part
    cos_low: float = 0.85      # the (expanded) cosine read as 0 % ...
    cos_high: float = 0.97     # ... and as 100 %
    words: float = 0.005       # near-tie breakers: share of the demand's terms and skills covered
    skills: float = 0.005
    schedule: float = 0.01     # soft preferences
    distance: float = 0.01     # at most this much off for a place at the demand's distance limit
    start: float = 0.005       # at most this much off for a start at the end of the window


WEIGHTS = Weights()


def expand_query(demand_vector: np.ndarray, candidate_vectors: np.ndarray, weights: Weights | None = None
                 ) -> np.ndarray:
    """The demand's ranking vector: its own vector moved towards the mean of its ``feedback_k`` nearest
    candidates (the feasible offers' vectors, one row each), L2-normalised. Only candidates whose
    cosine reaches ``feedback_floor`` take part, and places in the mean that no such candidate fills
    are taken by the demand's own vector: with few candidates the demand moves little (else it would
    be pulled onto whatever is there, and a lone unrelated offer would score as a perfect fit). With
    no such candidate it is the demand's vector itself."""
    w = weights or WEIGHTS
    query = np.asarray(demand_vector, dtype=np.float32).reshape(-1)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    matrix = np.asarray(candidate_vectors, dtype=np.float32).reshape(-1, query.shape[0])
    cosines = matrix @ query if matrix.shape[0] else np.zeros(0, dtype=np.float32)
    near = np.flatnonzero(cosines >= w.feedback_floor)
    if near.size == 0 or w.feedback_beta <= 0 or w.feedback_k <= 0:
        return query
    k = min(w.feedback_k, near.size)
    top = near[np.argpartition(-cosines[near], k - 1)[:k]] if k < near.size else near
    centroid = (matrix[top].sum(axis=0) + (w.feedback_k - k) * query) / w.feedback_k
    expanded = query + w.feedback_beta * centroid
    return (expanded / max(float(np.linalg.norm(expanded)), 1e-12)).astype(np.float32)


@dataclass
class Ranked:
    offer_id: str
    provider_id: str
    score: float
    reasons: dict[str, Any] = field(default_factory=dict)
    direct: float | None = None  # cosine of the offer and the demand's own (not expanded) vector


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
        lo, hi, at = as_date(demand["start_from"]), as_date(demand["start_to"]), as_date(start)
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


def meaning_score(cosine: float, weights: Weights | None = None) -> float:
    """A cosine of the (expanded) demand vector and an offer vector, read on a 0..1 scale."""
    w = weights or WEIGHTS
    return min(1.0, max(0.0, (cosine - w.cos_low) / (w.cos_high - w.cos_low)))


def _score(demand: dict[str, Any], offer: dict[str, Any], feasibility: Feasibility, cosine: float,
           dw: _DemandWords, w: Weights) -> tuple[float, dict[str, Any]]:
    text, skills, matched = _words_score(dw, _offer_words(offer))
    meaning = meaning_score(cosine, w)
    score = meaning + w.words * text + w.skills * skills
    reasons = reasons_for(offer, demand, feasibility, matched)
    if reasons["schedule_preferred"]:
        score += w.schedule
    if feasibility.distance_km is not None and demand.get("max_distance_km"):
        score -= w.distance * min(1.0, feasibility.distance_km / float(demand["max_distance_km"]))
    score -= w.start * _window_share(demand, reasons["start"])
    score = round(min(1.0, max(0.0, score)), 4)
    reasons["relevance"] = {"meaning": round(meaning, 3), "words": round(text, 3), "skills": round(skills, 3)}
    return score, reasons


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    cosine = float(np.dot(np.asarray(a, dtype=np.float32).reshape(-1), b))
    return cosine if math.isfinite(cosine) else 0.0


def rank(demand: dict[str, Any], candidates: Sequence[tuple[dict[str, Any], Feasibility, np.ndarray]],
         demand_vector: np.ndarray, weights: Weights | None = None, plain_vector: np.ndarray | None = None
         ) -> list[Ranked]:
    """Every feasible candidate (``domain.check`` passed), best first (ties: offer id). ``demand_vector``
    is best the expanded one (``expand_query`` over the demand's feasible candidates); the demand's
    plain vector works too, ranking by meaning without the feedback step. ``plain_vector`` is the
    demand's own vector when ``demand_vector`` is the expanded one: each pair's ``direct`` cosine,
    which ``announce`` requires to reach ``MATCH_FLOOR`` (the feedback step pulls the demand towards its
    candidates, whatever they are: a lone unrelated offer would score as a perfect fit)."""
    w = weights or WEIGHTS
    dw = _demand_words(demand)
    query = np.asarray(demand_vector, dtype=np.float32).reshape(-1)
    own = query if plain_vector is None else np.asarray(plain_vector, dtype=np.float32).reshape(-1)
    out = []
    for offer, feasibility, vector in candidates:
        if not feasibility.ok:
            continue  # never ranked, whatever the caller passed
        cosine = _cosine(vector, query)
        score, reasons = _score(demand, offer, feasibility, cosine, dw, w)
        out.append(Ranked(str(offer["id"]), _provider_id(offer), score, reasons, round(_cosine(vector, own), 4)))
    out.sort(key=lambda r: (-r.score, r.offer_id))
    return out


def may_announce(direct: np.ndarray, expanded: np.ndarray, best: np.ndarray) -> np.ndarray:
    """A bound on ``announce`` for many pairs from their cosines alone (``direct``: with the demand's own
    vector, ``expanded``: with its ranking vector; ``best``: the demand's best score, NaN for none):
    False only where ``announce`` would refuse the pair whatever its words, schedule, distance and
    start. Lets one offer be judged against thousands of demands by one matrix product."""
    w = WEIGHTS
    slack = 1e-4  # the score is summed in another order here; never refuse a pair on a rounding
    highest = np.clip((expanded - w.cos_low) / (w.cos_high - w.cos_low), 0.0, 1.0) + w.words + w.skills + w.schedule
    bar = np.fmax(MATCH_THRESHOLD, best - MATCH_MARGIN)  # fmax: NaN (no best yet) gives the threshold
    return (direct >= MATCH_FLOOR - slack) & (highest >= bar - slack)


def announce(ranked: list[Ranked], threshold: float | None = None, margin: float | None = None,
             per_provider: int | None = None, best: float | None = None, floor: float | None = None
             ) -> list[Ranked]:
    """The matches of one demand, best first, at most MAX_MATCHES_PER_DEMAND: score at least
    ``MATCH_THRESHOLD`` and within ``MATCH_MARGIN`` of the demand's best score, and the pair's own
    cosine (``Ranked.direct``, where known) at least ``MATCH_FLOOR``. A provider may hold several
    matches of a demand (``per_provider`` limits them; matching announces only a provider's first, so
    it hears of a demand once). ``ranked`` is the demand's whole ranking as ``rank`` gives it; when it
    is only part of it (one changed offer, or the offers not matched yet), ``best`` is the demand's
    best score known otherwise."""
    limit = MATCH_THRESHOLD if threshold is None else threshold
    lowest = MATCH_FLOOR if floor is None else floor
    ordered = sorted(ranked, key=lambda r: (-r.score, r.offer_id))
    top = max([r.score for r in ordered[:1]] + ([best] if best is not None else []), default=None)
    if top is not None:
        limit = max(limit, top - (MATCH_MARGIN if margin is None else margin))
    out: list[Ranked] = []
    per: dict[str, int] = {}
    for item in ordered:
        if item.score < limit:
            break
        if item.direct is not None and item.direct < lowest:
            continue
        if per_provider is not None and per.get(item.provider_id, 0) >= per_provider:
            continue
        per[item.provider_id] = per.get(item.provider_id, 0) + 1
        out.append(item)
        if len(out) == MAX_MATCHES_PER_DEMAND:
            break
    return out
