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
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    @property
    def relevant_share(self) -> float:
        return self.relevant / self.announced if self.announced else 1.0


def summarise(data: EvalSet, results: dict[str, tuple[list[str], list[str]]]) -> Figures:
    """``results``: demand id -> (the announced offer ids, the whole ranking), best first."""
    offers = {o["id"]: o for o in data.offers}
    per, violations, announced, relevant = {}, 0, 0, 0
    for demand in data.demands:
        did = demand["id"]
        matches, ranking = results.get(did, ([], []))
        feasible_ids = {o["id"] for o in data.offers if data.feasible(o, demand)}
        bad = [o for o in set(matches) | set(ranking) if o not in feasible_ids or o not in offers]
        violations += len(bad)
        good = sum(1 for o in matches if data.grades.get((did, o), 0) >= 1)
        announced += len(matches)
        relevant += good
        per[did] = {"ndcg_matches": ndcg_at_10(did, matches, data, feasible_ids),
                    "ndcg_ranking": ndcg_at_10(did, ranking, data, feasible_ids),
                    "announced": len(matches), "relevant": good, "violations": bad}
    n = len(data.demands) or 1
    return Figures(sum(p["ndcg_matches"] for p in per.values()) / n,
                   sum(p["ndcg_ranking"] for p in per.values()) / n, violations, announced, relevant, per)


def run_offline(data: EvalSet, encoder: relevance.Encoder | None = None, weights: relevance.Weights | None = None,
                threshold: float | None = None, vectors: dict[str, Any] | None = None) -> Figures:
    encoder = encoder or relevance.load_encoder()
    if vectors is None:
        vectors = offer_and_demand_vectors(data, encoder)
    results = {}
    for demand in data.demands:
        candidates = []
        for offer in data.offers:
            feasibility = check(offer, demand)
            if feasibility.ok:
                candidates.append((offer, feasibility, vectors["offers"][offer["id"]]))
        ranked = relevance.rank(demand, candidates, vectors["demands"][demand["id"]], weights=weights)
        matches = relevance.announce(ranked, threshold=threshold)
        results[demand["id"]] = ([m.offer_id for m in matches], [r.offer_id for r in ranked])
    return summarise(data, results)


def offer_and_demand_vectors(data: EvalSet, encoder: relevance.Encoder) -> dict[str, dict[str, Any]]:
    offer_vectors = encoder.encode([relevance.offer_text(o) for o in data.offers], "passage")
    demand_vectors = encoder.encode([relevance.demand_text(d) for d in data.demands], "query")
    return {"offers": {o["id"]: v for o, v in zip(data.offers, offer_vectors, strict=True)},
            "demands": {d["id"]: v for d, v in zip(data.demands, demand_vectors, strict=True)}}


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
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    if not (args.folder / "offers.jsonl").exists():
        print(f"{args.folder}: no offers.jsonl here (expected the shared/eval layout)", file=sys.stderr)
        return 2
    data = load_set(args.folder)
    figures = run_offline(data)
    print(report(figures, f"{args.folder} (offline: domain.check + relevance.rank + relevance.announce, "
                          f"threshold {relevance.MATCH_THRESHOLD})", args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
