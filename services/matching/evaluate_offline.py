"""Matching quality without the services: reads a folder of the ``shared/eval`` layout (offers.jsonl,
demands.jsonl, qrels.jsonl), applies ``domain.check``, ``relevance.rank`` and ``relevance.announce``
directly and prints mean nDCG@10 of the matches, the hard-constraint violations among them, and the
share of announced matches graded relevant (grade >= 1).

    python -m services.matching.evaluate_offline ../shared/eval/dev [--verbose]

nDCG@10: gain = grade, discount 1/log2(rank + 1), ideal ranking from the feasible judged offers (the
definition of ``shared/eval/baseline.py``). Violations are counted against the folder's own
``checker.py`` when it has one, otherwise against ``domain.check``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.matching import relevance
from services.matching.domain import check


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class EvalSet:
    offers: list[dict[str, Any]]
    demands: list[dict[str, Any]]
    grades: dict[tuple[str, str], int]
    feasible: Callable[[dict[str, Any], dict[str, Any]], bool]


def load_set(folder: Path) -> EvalSet:
    offers = read_jsonl(folder / "offers.jsonl")
    demands = read_jsonl(folder / "demands.jsonl")
    grades = {(q["demand_id"], q["offer_id"]): int(q["grade"]) for q in read_jsonl(folder / "qrels.jsonl")}
    feasible = lambda o, d: check(o, d).ok  # noqa: E731
    checker_path = folder / "checker.py"
    if checker_path.exists():
        spec = importlib.util.spec_from_file_location("eval_checker", checker_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        feasible = module.is_feasible
    return EvalSet(offers, demands, grades, feasible)


def dcg(gains: list[int]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_10(demand_id: str, returned: list[str], data: EvalSet, feasible_ids: set[str]) -> float:
    ideal = sorted((g for (d, o), g in data.grades.items() if d == demand_id and o in feasible_ids), reverse=True)
    idcg = dcg(ideal[:10])
    return dcg([data.grades.get((demand_id, o), 0) for o in returned[:10]]) / idcg if idcg else 0.0


@dataclass
class Figures:
    ndcg_matches: float
    ndcg_ranking: float
    violations: int
    announced: int
    relevant: int
    per_demand: dict[str, dict[str, Any]]
    # k -> (relevant, places) over every demand's first k ranked offers: what MAX_MATCHES_PER_DEMAND is read from
    first_places: dict[int, tuple[int, int]]

    @property
    def relevant_share(self) -> float:
        return self.relevant / self.announced if self.announced else 1.0


def summarise(data: EvalSet, results: dict[str, tuple[list[str], list[str]]]) -> Figures:
    """``results``: demand id -> (the announced offer ids, the whole ranking), best first."""
    offers = {o["id"]: o for o in data.offers}
    per, violations, announced, relevant = {}, 0, 0, 0
    first_places = {k: [0, 0] for k in range(1, 6)}
    for demand in data.demands:
        did = demand["id"]
        matches, ranking = results.get(did, ([], []))
        feasible_ids = {o["id"] for o in data.offers if data.feasible(o, demand)}
        # an id the set does not know (an offer from elsewhere on a live platform) has no rules to check
        bad = sorted(o for o in set(matches) | set(ranking) if o in offers and o not in feasible_ids)
        violations += len(bad)
        good = sum(1 for o in matches if data.grades.get((did, o), 0) >= 1)
        announced += len(matches)
        relevant += good
        for k, tally in first_places.items():
            tally[0] += sum(1 for o in ranking[:k] if data.grades.get((did, o), 0) >= 1)
            tally[1] += len(ranking[:k])
        per[did] = {"ndcg_matches": ndcg_at_10(did, matches, data, feasible_ids),
                    "ndcg_ranking": ndcg_at_10(did, ranking, data, feasible_ids),
                    "announced": len(matches), "relevant": good, "violations": bad}
    n = len(data.demands) or 1
    return Figures(sum(p["ndcg_matches"] for p in per.values()) / n,
                   sum(p["ndcg_ranking"] for p in per.values()) / n, violations, announced, relevant, per,
                   {k: (good, places) for k, (good, places) in first_places.items()})


def rank_set(data: EvalSet, vectors: dict[str, dict[str, Any]], weights: relevance.Weights | None = None
             ) -> dict[str, list[relevance.Ranked]]:
    """Each demand's feasible offers ranked as the service ranks them: ``domain.check``, the demand's
    vector expanded over its candidates (``relevance.expand_query``), ``relevance.rank``."""
    rankings = {}
    for demand in data.demands:
        candidates = []
        for offer in data.offers:
            feasibility = check(offer, demand)
            if feasibility.ok:
                candidates.append((offer, feasibility, vectors["offers"][offer["id"]]))
        plain = vectors["demands"][demand["id"]]
        query = plain
        if candidates:
            query = relevance.expand_query(plain, np.stack([c[2] for c in candidates]), weights)
        rankings[demand["id"]] = relevance.rank(demand, candidates, query, weights=weights, plain_vector=plain)
    return rankings


def run_offline(data: EvalSet, vectors: dict[str, dict[str, Any]], weights: relevance.Weights | None = None,
                per_provider: int | None = None, **announce_args: Any) -> Figures:
    """The matches as the service makes them when a demand opens: ``relevance.announce`` over the
    demand's whole ranking (several offers of one provider may be matches; only its first is mailed)."""
    results = {}
    for demand_id, ranked in rank_set(data, vectors, weights).items():
        matches = relevance.announce(ranked, per_provider=per_provider, **announce_args)
        results[demand_id] = ([m.offer_id for m in matches], [r.offer_id for r in ranked])
    return summarise(data, results)


def offer_and_demand_vectors(data: EvalSet, encoder: relevance.Encoder | None = None,
                             cache: Path | None = None) -> dict[str, dict[str, Any]]:
    """The encoder's vectors of every offer and demand; with ``cache``, kept in that .npz file by the
    SHA-256 of kind and text (encoding a set takes minutes on a busy machine)."""
    stored: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as npz:
            stored = {k: npz[k] for k in npz.files}
    jobs = [("passage", relevance.offer_text(o)) for o in data.offers] + \
           [("query", relevance.demand_text(d)) for d in data.demands]
    keys = [hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest() for kind, text in jobs]
    missing = [(key, kind, text) for key, (kind, text) in zip(keys, jobs, strict=True) if key not in stored]
    if missing:
        encoder = encoder or relevance.load_encoder()
        for kind in ("passage", "query"):
            todo = [(key, text) for key, k, text in missing if k == kind]
            if todo:
                for (key, _), vector in zip(todo, encoder.encode([t for _, t in todo], kind), strict=True):
                    stored[key] = vector
        if cache is not None:
            np.savez(cache, **stored)
    n = len(data.offers)
    return {"offers": {o["id"]: stored[k] for o, k in zip(data.offers, keys[:n], strict=True)},
            "demands": {d["id"]: stored[k] for d, k in zip(data.demands, keys[n:], strict=True)}}


def report(figures: Figures, title: str, verbose: bool = False) -> str:
    lines = [title]
    if verbose:
        for did, p in figures.per_demand.items():
            lines.append(f"  {did}  nDCG@10 matches {p['ndcg_matches']:.3f}  ranking {p['ndcg_ranking']:.3f}  "
                         f"announced {p['announced']}  relevant {p['relevant']}"
                         + (f"  VIOLATIONS {p['violations']}" if p["violations"] else ""))
    lines += [
        f"mean nDCG@10 of the matches:              {figures.ndcg_matches:.3f}",
        f"mean nDCG@10 of the full ranking:         {figures.ndcg_ranking:.3f}",
        f"returned offers breaking a hard rule:     {figures.violations}",
        f"announced matches graded relevant (>=1):  {figures.relevant}/{figures.announced}"
        f" = {100 * figures.relevant_share:.1f} %",
        "relevant among the first k ranked offers:  " + "   ".join(
            f"k={k}: {good}/{places}" for k, (good, places) in figures.first_places.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--verbose", "-v", action="store_true", help="figures per demand")
    parser.add_argument("--cache", type=Path, help="keep the vectors in this .npz file")
    args = parser.parse_args(argv)
    if not (args.folder / "offers.jsonl").exists():
        print(f"{args.folder}: no offers.jsonl here (expected the shared/eval layout)", file=sys.stderr)
        return 2
    data = load_set(args.folder)
    vectors = offer_and_demand_vectors(data, cache=args.cache)
    figures = run_offline(data, vectors)
    print(report(figures, f"{args.folder}: offline (domain.check, relevance.expand_query + rank + announce; "
                          f"threshold {relevance.MATCH_THRESHOLD}, margin {relevance.MATCH_MARGIN}, "
                          f"floor {relevance.MATCH_FLOOR})", args.verbose))
    mailed = sum(len({m.provider_id for m in relevance.announce(r)}) for r in rank_set(data, vectors).values())
    print(f"providers mailed (one mail per provider and demand):  {mailed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
