"""The 8-bit first step of a demand's ranking, in-process (the diagnosis behind e879f08):
``.venv/bin/python -m tests.bench.meaning_step [--offers N] [--feasible M]``.

An index of N random unit vectors; M of them, in the index's memory order, stand for a demand's
feasible offers. Times both products of the step (the demand's own vector, then its expanded one) the way
``OfferIndex.codes`` reads them, against the way before it (each product gathering the codes in the
given order and widening every chunk into a fresh float32 copy), and the whole ``meaning_step``;
median of nine runs each."""

from __future__ import annotations

import argparse
import time

import numpy as np

from services.matching.handlers import meaning_step
from services.matching.index import DIM, VECTOR_DTYPE, OfferIndex


def _median_ms(work, runs: int = 9) -> float:
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return sorted(times)[runs // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=1_000_000)
    parser.add_argument("--feasible", type=int, default=72_000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    index = OfferIndex()
    for start in range(0, args.offers, 100_000):
        size = min(100_000, args.offers - start)
        vectors = rng.standard_normal((size, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index._put([f"o{i}" for i in range(start, start + size)], vectors.astype(VECTOR_DTYPE))
    rows = np.sort(rng.choice(args.offers, args.feasible, replace=False))  # in memory order, as feasible sets come
    keys = rng.permutation(len(rows)).astype(np.uint64)
    query = rng.standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)

    def before(query: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), 8192):
            out[start:start + 8192] = index._codes[rows[start:start + 8192]].astype(np.float32) @ query
        return out * index._scales[rows]

    def now() -> None:
        codes = index.codes(rows)
        codes.scores(query)
        codes.scores(query)

    print(f"{args.offers} offers, {args.feasible} feasible")
    old = _median_ms(lambda: (before(query), before(query)))
    print(f"  both products, each gathering and widening anew (before): {old:.1f} ms")
    print(f"  both products on one CodeBlock (now):                     {_median_ms(now):.1f} ms")
    print(f"  meaning_step as a ranking calls it:                       "
          f"{_median_ms(lambda: meaning_step(index, rows, query, {}, np.array([], dtype=np.int64), keys)):.1f} ms")


if __name__ == "__main__":
    main()
