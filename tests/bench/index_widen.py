"""Why matching's first step reads 8-bit codes: the cost of scoring 100,000 feasible offers of a
million-row index, gathered and widened to float32 as float16 (the exact vectors) or as int8 (the
codes), whole or 8,192 rows at a time (services/matching/index.py, CHUNK). Random unit vectors:
the cost does not depend on what they mean.

    .venv/bin/python -m tests.bench.index_widen
"""

from __future__ import annotations

import time

import numpy as np

ROWS, DIM, FEASIBLE, CHUNK = 1_000_000, 384, 100_000, 8192


def main() -> None:
    rng = np.random.default_rng(0)
    half = np.empty((ROWS, DIM), dtype=np.float16)
    codes = np.empty((ROWS, DIM), dtype=np.int8)
    scales = np.empty(ROWS, dtype=np.float32)
    for start in range(0, ROWS, 100_000):  # made in parts: one float32 copy of it all would be 1.5 GB
        part = rng.standard_normal((100_000, DIM)).astype(np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        half[start:start + 100_000] = part
        scale = np.abs(part).max(axis=1) / 127
        codes[start:start + 100_000] = np.rint(part / scale[:, None]).astype(np.int8)
        scales[start:start + 100_000] = scale
    rows = np.sort(rng.choice(ROWS, FEASIBLE, replace=False))
    query = rng.standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)

    def chunked(matrix: np.ndarray) -> np.ndarray:
        return np.concatenate([matrix[rows[i:i + CHUNK]].astype(np.float32) @ query
                               for i in range(0, FEASIBLE, CHUNK)])

    for name, step in [("float16, whole", lambda: half[rows].astype(np.float32) @ query),
                       ("float16, chunked", lambda: chunked(half)),
                       ("int8, whole", lambda: (codes[rows].astype(np.float32) @ query) * scales[rows]),
                       ("int8, chunked", lambda: chunked(codes) * scales[rows])]:
        step()
        started = time.perf_counter()
        for _ in range(5):
            step()
        print(f"{name:18} {(time.perf_counter() - started) / 5 * 1000:6.1f} ms for {FEASIBLE} of {ROWS} rows")


if __name__ == "__main__":
    main()
