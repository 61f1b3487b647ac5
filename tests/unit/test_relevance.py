"""Ranking by meaning and announcing (services/matching/relevance.py), with the real encoder."""

from __future__ import annotations

import numpy as np
import pytest

from services.matching import relevance
from services.matching.domain import Feasibility, check
from services.matching.relevance import (
    MATCH_FLOOR,
    MATCH_MARGIN,
    MATCH_THRESHOLD,
    MAX_MATCHES_PER_DEMAND,
    Ranked,
    announce,
    expand_query,
    rank,
)

SESSION = {"start": "2027-03-08", "end": "2027-03-12",
           "location": {"zip": "59494", "city": "Soest", "lat": 51.57, "lon": 8.11}}


def _demand(title: str, description: str, skills: list[str], employees: int = 48) -> dict:
    return {"id": "d", "tenant": "t", "title": title, "description": description, "skills": skills,
            "employer": {"name": "Firma", "employees": employees, "lat": 51.57, "lon": 8.11},
            "participants": 2, "start_from": "2027-03-01", "start_to": "2027-05-31",
            "formats": ["presence", "online"], "schedules": [], "max_distance_km": 50,
            "max_price_eur": None, "funding_required": False}


def _offer(oid: str, title: str, description: str, skills: list[str], provider: str | None = None,
           price: float = 1000, qcg: bool = False) -> dict:
    return {"id": oid, "tenant": "t", "provider_id": provider or f"p-{oid}", "title": title,
            "description": description, "skills": skills, "format": "presence", "schedule": "full_time",
            "price_eur": price, "funding": {"bildungsgutschein": False, "qcg": qcg, "aufstiegsbafoeg": False},
            "sessions": [SESSION], "visibility": {"scope": "home", "networks": []}, "status": "published"}


DISTRACTORS = [
    _offer("x1", "Erste Hilfe im Betrieb", "Ausbildung zum betrieblichen Ersthelfer nach DGUV Vorschrift 1: "
           "Notruf, stabile Seitenlage, Herz-Lungen-Wiederbelebung.", ["Erste Hilfe", "Reanimation"]),
    _offer("x2", "Excel für Einsteiger", "Tabellenkalkulation mit Microsoft Excel: Formeln, Diagramme, "
           "Pivot-Tabellen für Büro und Verwaltung.", ["Excel", "Tabellenkalkulation"]),
    _offer("x3", "Buchhaltung mit DATEV", "Laufende Finanzbuchhaltung mit DATEV Kanzlei-Rechnungswesen: "
           "Belege kontieren, Umsatzsteuer-Voranmeldung.", ["DATEV", "Finanzbuchhaltung"]),
    _offer("x4", "Schweißen MAG für Einsteiger", "Metallaktivgasschweißen an Baustahl, Kehlnähte, "
           "Prüfung nach DIN EN ISO 9606-1.", ["MAG-Schweißen", "Kehlnaht"]),
]


def _ranked_ids(demand: dict, offers: list[dict]) -> list[str]:
    encoder = relevance.load_encoder()
    vectors = encoder.encode([relevance.offer_text(o) for o in offers], "passage")
    query = encoder.encode([relevance.demand_text(demand)], "query")[0]
    candidates = [(o, check(o, demand), v) for o, v in zip(offers, vectors, strict=True)]
    assert all(f.ok for _, f, _ in candidates)
    return [r.offer_id for r in rank(demand, candidates, query)]


@pytest.mark.parametrize(("demand", "right"), [
    (_demand("Staplerschein für zwei Lagerhelfer", "Zwei Helfer im Lager sollen den Staplerschein machen, "
             "damit sie Paletten be- und entladen dürfen.", ["Staplerschein"]),
     _offer("ok", "Ausbildung zum Flurförderzeugführer", "Theorie und Praxis nach DGUV Grundsatz 308-001: "
            "Frontstapler sicher fahren, Lasten aufnehmen, Standsicherheit, Prüfung und Fahrausweis.",
            ["Flurförderzeuge", "DGUV Grundsatz 308-001"])),
    (_demand("SPS-Kurs für unsere Elektriker", "Unsere Elektriker sollen SPS-Programme lesen und ändern können, "
             "die Anlagen laufen mit Siemens.", ["SPS"]),
     _offer("ok", "Speicherprogrammierbare Steuerungen programmieren", "Aufbau und Programmierung "
            "speicherprogrammierbarer Steuerungen mit TIA Portal und S7-1500: Bausteine, Ablaufketten, Fehlersuche.",
            ["Steuerungstechnik", "TIA Portal", "S7-1500"])),
    (_demand("Pflegehelfer für unser Seniorenheim", "Wir suchen eine Qualifizierung für angelernte "
             "Pflegehelfer in der stationären Altenpflege.", ["Pflegehelfer", "Altenpflege"]),
     _offer("ok", "Basisqualifizierung Pflegeassistenz", "Pflegeassistenz in der Langzeitpflege: Grundpflege, "
            "Mobilisation, Beobachtung und Dokumentation, Praktikum in einer Pflegeeinrichtung.",
            ["Pflegeassistenz", "Grundpflege"])),
], ids=["stapler", "sps", "pflege"])
def test_the_offer_in_other_words_ranks_first(demand: dict, right: dict) -> None:
    assert _ranked_ids(demand, [*DISTRACTORS, right])[0] == "ok"


def test_infeasible_candidates_are_never_ranked() -> None:
    demand = _demand("Staplerschein", "", ["Staplerschein"])
    offer = _offer("o", "Staplerschein", "Gabelstapler", ["Stapler"])
    vector = np.zeros(relevance.load_encoder().dim, dtype=np.float32)
    assert rank(demand, [(offer, Feasibility(("distance",)), vector)], vector) == []


def _r(oid: str, provider: str, score: float, direct: float | None = None) -> Ranked:
    return Ranked(oid, provider, score, {}, direct)


def test_announce_caps_and_honours_the_threshold_the_margin_and_the_floor() -> None:
    ranked = [_r(f"o{i:02d}", f"p{i:02d}", 0.99 - i * 0.001) for i in range(15)]
    assert [m.offer_id for m in announce(ranked)] == [f"o{i:02d}" for i in range(MAX_MATCHES_PER_DEMAND)]
    # several offers of one provider may be matches (matching mails the provider once per demand)
    same = [_r("a", "p1", 0.95), _r("b", "p1", 0.97), _r("c", "p2", 0.94)]
    assert [m.offer_id for m in announce(same)] == ["b", "a"]
    assert [m.offer_id for m in announce(same, per_provider=1)] == ["b", "c"]
    low = [_r("a", "p1", MATCH_THRESHOLD - 0.01), _r("b", "p2", MATCH_THRESHOLD)]
    assert [m.offer_id for m in announce(low)] == ["b"]
    assert announce([]) == []
    # far below the demand's best offer: not worth the provider's time, whatever the absolute score
    spread = [_r("a", "p1", 0.95), _r("b", "p2", 0.95 - MATCH_MARGIN - 0.01)]
    assert [m.offer_id for m in announce(spread)] == ["a"]
    assert [m.offer_id for m in announce(spread, margin=1.0)] == ["a", "b"]
    # one changed offer judged alone: the demand's best score comes from elsewhere
    assert announce([spread[1]]) == [spread[1]]
    assert announce([spread[1]], best=0.95) == []
    # the pair's own cosine (without the feedback step) below the floor: never a match
    direct = [_r("a", "p1", 0.99, MATCH_FLOOR - 0.001), _r("b", "p2", 0.98, MATCH_FLOOR)]
    assert [m.offer_id for m in announce(direct)] == ["b"]


def _alone(demand: dict, offer: dict) -> Ranked:
    """The pair as matching judges it when the offer is the demand's only feasible one."""
    encoder = relevance.load_encoder()
    plain = encoder.encode([relevance.demand_text(demand)], "query")[0]
    vector = encoder.encode([relevance.offer_text(offer)], "passage")[0]
    (item,) = rank(demand, [(offer, check(offer, demand), vector)], expand_query(plain, vector[None, :]),
                   plain_vector=plain)
    return item


FORKLIFT = _demand("Gabelstapler-Ausbildung für Lagerhelfer", "Drei Lagerhelfer sollen den Staplerschein "
                   "machen und Flurförderzeuge sicher führen.", ["Gabelstapler", "Flurförderzeuge"])


@pytest.mark.parametrize("title", ["Staplerschein kompakt vor Ort", "Staplerschein Entwurfstest",
                                   "Staplerschein: Flurförderzeuge sicher führen"])
def test_a_lone_fitting_offer_is_a_match(title: str) -> None:
    offer = _offer("o", title, "Ausbildung zum Gabelstaplerfahrer nach DGUV Grundsatz 308-001 mit Prüfung.",
                   ["Gabelstapler", "Flurförderzeuge", "DGUV 308-001"])
    assert announce([_alone(FORKLIFT, offer)])


@pytest.mark.parametrize("offer", DISTRACTORS, ids=lambda o: o["id"])
def test_a_lone_unrelated_offer_is_no_match(offer: dict) -> None:
    """The feedback step pulls the demand onto its only candidate (a perfect score); the pair's own
    cosine keeps a first-aid course from being announced for forklift training."""
    item = _alone(FORKLIFT, offer)
    assert item.direct is not None and item.direct < MATCH_FLOOR
    assert announce([item]) == []


def test_expand_query_moves_towards_the_nearest_candidates() -> None:
    rng = np.random.default_rng(7)
    query = rng.normal(size=8).astype(np.float32)
    query /= np.linalg.norm(query)
    cluster = query + 0.8 * rng.normal(size=(5, 8)).astype(np.float32)
    far = -query + 0.1 * rng.normal(size=(5, 8)).astype(np.float32)
    matrix = np.vstack([cluster, far])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    anyone = relevance.Weights(feedback_floor=-1.0)  # random toy vectors: every candidate may take part
    expanded = expand_query(query, matrix, anyone)
    assert expanded.shape == (8,) and abs(float(np.linalg.norm(expanded)) - 1) < 1e-5
    centroid = cluster.mean(axis=0) / np.linalg.norm(cluster.mean(axis=0))
    assert float(expanded @ centroid) > float(query @ centroid)
    assert np.allclose(expand_query(query, np.zeros((0, 8), dtype=np.float32)), query)


def test_expand_query_moves_little_with_few_near_candidates_and_not_at_all_with_none() -> None:
    rng = np.random.default_rng(3)
    query = rng.normal(size=8).astype(np.float32)
    query /= np.linalg.norm(query)
    other = rng.normal(size=8).astype(np.float32)
    other -= (other @ query) * query
    other /= np.linalg.norm(other)
    near = 0.9 * query + np.sqrt(1 - 0.81) * other  # cosine 0.9 with the demand
    far = 0.5 * query + np.sqrt(1 - 0.25) * other  # cosine 0.5: below the feedback floor
    assert np.allclose(expand_query(query, far[None, :]), query)
    lone = expand_query(query, near[None, :])
    crowd = expand_query(query, np.tile(near, (relevance.WEIGHTS.feedback_k, 1)))
    assert float(query @ near) < float(lone @ near) < float(crowd @ near)


@pytest.mark.parametrize(("employees", "cost"), [(12, 0.0), (49, 0.0), (50, 1000.0), (499, 1000.0),
                                                 (500, 1500.0), (None, None)])
def test_employer_cost_after_qcg(employees: int | None, cost: float | None) -> None:
    demand = _demand("Staplerschein", "", ["Staplerschein"], employees=employees)
    offer = _offer("o", "Flurförderzeugführer", "Frontstapler fahren", ["Stapler"], price=2000, qcg=True)
    vector = relevance.load_encoder().encode([relevance.offer_text(offer)], "passage")[0]
    (item,) = rank(demand, [(offer, check(offer, demand), vector)], vector)
    assert item.reasons.get("employer_cost_eur_after_qcg") == cost
    assert set(item.reasons) >= {"skills", "start", "place", "distance_km", "format", "schedule_preferred",
                                 "price_eur", "funding"}
    assert 0 <= item.score <= 1


def test_no_cost_line_without_qcg() -> None:
    demand = _demand("Staplerschein", "", ["Staplerschein"], employees=80)
    offer = _offer("o", "Flurförderzeugführer", "Frontstapler fahren", ["Stapler"], price=2000, qcg=False)
    vector = relevance.load_encoder().encode([relevance.offer_text(offer)], "passage")[0]
    (item,) = rank(demand, [(offer, check(offer, demand), vector)], vector)
    assert "employer_cost_eur_after_qcg" not in item.reasons


def test_importing_loads_no_model() -> None:
    import subprocess
    import sys

    code = ("import sys, services.matching.relevance, services.matching.encoder as e; "
            "assert e._encoder is None; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_may_announce_never_refuses_a_pair_announce_takes() -> None:
    """The bound reverse matching filters thousands of demands with: every pair ``announce`` takes
    passes it, over pairs spread across the threshold, the margin and the floor (and it does refuse
    most of the others, or it would filter nothing)."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=384).astype(np.float32)
    base /= np.linalg.norm(base)
    demand = _demand("Staplerschein für Lagerhelfer", "Gabelstapler sicher fahren", ["Gabelstapler"])
    offer = _offer("o", "Gabelstapler-Führerschein", "Flurförderzeuge sicher führen", ["Gabelstapler"])
    feasibility = check(offer, demand)
    taken = refused = 0
    for _ in range(3000):
        def near(spread: float) -> np.ndarray:
            v = base + rng.normal(scale=spread, size=384).astype(np.float32)
            return (v / np.linalg.norm(v)).astype(np.float32)
        own, expanded, offer_vector = near(0.008), near(0.008), near(rng.uniform(0.004, 0.05))
        best = None if rng.random() < 0.3 else float(rng.uniform(0.3, 1.0))
        ranked = rank(demand, [(offer, feasibility, offer_vector)], expanded, plain_vector=own)
        bound = relevance.may_announce(np.array([own @ offer_vector]), np.array([expanded @ offer_vector]),
                                       np.array([np.nan if best is None else best]))[0]
        if announce(ranked, best=best):
            taken += 1
            assert bound, (ranked[0].score, ranked[0].direct, best)
        elif not bound:
            refused += 1
    assert taken > 300 and refused > 1000
