"""The six hard constraints agree with the shared checker on every pair of the graded sets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from services.matching import relevance
from services.matching.domain import DemandIn, check, employer_share

EVAL = Path(__file__).resolve().parents[2].parent / "shared" / "eval"


def _load(folder: str) -> tuple[list[dict], list[dict], object]:
    root = EVAL / folder
    spec = importlib.util.spec_from_file_location(f"checker_{folder.replace('-', '_')}", root / "checker.py")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    read = lambda name: [json.loads(line) for line in (root / name).read_text().splitlines() if line.strip()]  # noqa: E731
    return read("offers.jsonl"), read("demands.jsonl"), checker


@pytest.mark.parametrize("folder", ["dev", "hard-dev"])
def test_hard_constraints_agree_with_the_reference_checker(folder: str) -> None:
    offers, demands, checker = _load(folder)
    pairs = [(o, d) for d in demands for o in offers]
    disagreements = [(d["id"], o["id"]) for o, d in pairs if check(o, d).ok != checker.is_feasible(o, d)]
    assert not disagreements
    # and the set has traps: pairs that are relevant but infeasible exist and are refused
    assert any(not check(o, d).ok for o, d in pairs)


def _ranked(demand: dict, offers: list[dict]) -> list[relevance.Ranked]:
    """The live ranking with one vector for all: words, skills and preferences decide."""
    same = np.ones(4, dtype=np.float32) / 2
    return relevance.rank(demand, [(o, check(o, demand), same) for o in offers], same)


def test_no_infeasible_offer_is_ever_evaluated_as_a_match() -> None:
    offers, demands, checker = _load("dev")
    by_id = {o["id"]: o for o in offers}
    for demand in demands:
        for ranked in _ranked(demand, offers):
            assert checker.is_feasible(by_id[ranked.offer_id], demand), (demand["id"], ranked.offer_id)


def test_reasons_name_skills_place_start_and_cost() -> None:
    offers, demands, _ = _load("dev")
    demand = next(d for d in demands if d["id"] == "d-01")
    best = _ranked(demand, offers)[0]
    score, reasons, offer = best.score, best.reasons, next(o for o in offers if o["id"] == best.offer_id)
    assert 0 < score <= 1
    assert reasons["skills"] and reasons["start"] and reasons["format"] == offer["format"]
    if offer["funding"]["qcg"]:
        assert reasons["employer_cost_eur_after_qcg"] == 0  # 48 employees: the employer pays nothing


def test_employer_share_after_qcg_funding() -> None:
    assert employer_share(49) == 0.0
    assert employer_share(50) == 0.5
    assert employer_share(499) == 0.5
    assert employer_share(500) == 0.75
    assert employer_share(None) is None


def test_relevance_prefers_the_offer_about_the_need() -> None:
    demand = {"title": "Staplerschein für Lagerhelfer", "description": "Flurförderzeuge sicher führen",
              "skills": ["Gabelstapler"]}
    stapler = {"title": "Gabelstaplerfahrer-Grundkurs", "skills": ["Flurförderzeuge"], "description": ""}
    excel = {"title": "Excel für Einsteiger", "skills": ["Tabellenkalkulation"], "description": ""}
    words = relevance._demand_words(demand)
    stapler_text, _, stapler_skills = relevance._words_score(words, relevance._offer_words(stapler))
    excel_text, _, _ = relevance._words_score(words, relevance._offer_words(excel))
    assert stapler_text > excel_text
    assert stapler_skills == ["Gabelstapler"]  # compound: gabelstapl in gabelstaplerfahr


def test_demand_window_must_not_run_backwards() -> None:
    body = {"employer": {"name": "X", "lat": 51.0, "lon": 7.0}, "title": "t", "participants": 1,
            "start_from": "2027-05-01", "start_to": "2027-04-01", "formats": ["online"], "max_distance_km": 10}
    with pytest.raises(ValidationError, match="start_to lies before start_from"):
        DemandIn.model_validate(body)
