"""The process's in-memory index of offer vectors (numpy), loaded from matching's PostgreSQL at
start and kept current by the vectors' change sequence: a restart re-encodes nothing, and offers
that another replica handled are here before this replica ranks with them.

``offer_vectors.change_seq`` is given in commit order (see store.stamp_vector), so reading every row
above the highest sequence seen misses nothing. Each ranking first asks PostgreSQL for rows above
that mark (an index lookup that usually returns none)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable

import asyncpg
import numpy as np

log = logging.getLogger(__name__)

DIM = 384
VECTOR_DTYPE = np.float16  # stored and held as half precision: 768 bytes an offer
BATCH = 20_000
CHUNK = 8192  # rows widened at a time by ``approximate``: a few MB, not one float32 copy of them all


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).reshape(-1).astype(VECTOR_DTYPE).tobytes()


def from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


class OfferIndex:
    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self._rows: dict[str, int] = {}
        self._matrix = np.zeros((1024, dim), dtype=VECTOR_DTYPE)
        # The same vectors in 8 bits (each row scaled to its largest value), for a first step over
        # many offers: numpy widens int8 about five times faster than float16, and reads half the bytes.
        self._codes = np.zeros((1024, dim), dtype=np.int8)
        self._scales = np.zeros(1024, dtype=np.float32)
        self.mark = 0  # the highest change sequence read
        self.loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def _put(self, offer_ids: list[str], vectors: np.ndarray) -> None:
        """Add or replace the offers' vectors (one row each, as stored)."""
        rows = np.empty(len(offer_ids), dtype=np.int64)
        for n, offer_id in enumerate(offer_ids):
            row = self._rows.get(offer_id)
            if row is None:
                row = self._rows[offer_id] = len(self._rows)
            rows[n] = row
        self._make_room(len(self._rows))
        self._matrix[rows] = vectors
        wide = np.asarray(vectors, dtype=np.float32)
        scales = np.abs(wide).max(axis=1) / 127
        scales[scales == 0] = 1.0
        self._codes[rows] = np.rint(wide / scales[:, None]).astype(np.int8)
        self._scales[rows] = scales

    def _make_room(self, offers: int) -> None:
        """Room for ``offers`` rows: at least that many, and at least twice the room there was."""
        if offers > len(self._matrix):
            size = max(offers, 2 * len(self._matrix))
            self._matrix, self._codes, self._scales = (
                _grown(self._matrix, size), _grown(self._codes, size), _grown(self._scales, size))

    async def sync(self, conn: asyncpg.Connection) -> int:
        """Read the vectors written since the last call; answers how many."""
        read = 0
        async with self._lock:
            if self.mark == 0:  # the first load: room for every stored vector at once, not by doubling
                self._make_room(await conn.fetchval("SELECT count(*) FROM offer_vectors"))
            while True:
                rows = await conn.fetch(
                    "SELECT offer_id, change_seq, vector FROM offer_vectors WHERE change_seq > $1"
                    " ORDER BY change_seq LIMIT $2", self.mark, BATCH)
                width = self.dim * np.dtype(VECTOR_DTYPE).itemsize
                fitting = [r for r in rows if len(r["vector"]) == width]
                if fitting:
                    # the same offer twice in one batch: its later row wins, as it would one by one
                    latest = {str(r["offer_id"]): r["vector"] for r in fitting}
                    self._put(list(latest), np.frombuffer(b"".join(latest.values()), dtype=VECTOR_DTYPE)
                              .reshape(len(latest), self.dim))
                if rows:
                    self.mark = rows[-1]["change_seq"]
                read += len(rows)
                if len(rows) < BATCH:
                    break
            if self.loaded_at is None:
                self.loaded_at = time.time()
                log.info("offer index loaded", extra={"offers": len(self._rows), "mark": self.mark})
        return read

    def rows(self, offer_ids: Iterable[str]) -> np.ndarray:
        """The offers' rows in the index, -1 where none is known yet."""
        return np.array(list(map(self._rows.get, offer_ids, itertools.repeat(-1))), dtype=np.int64)

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given rows as float32 (zeros where the row is -1)."""
        out = self._matrix[np.where(rows >= 0, rows, 0)].astype(np.float32)
        out[rows < 0] = 0.0
        return out

    def vectors(self, offer_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of the given offers as float32 rows (zeros where none is known yet), and which
        were known."""
        rows = self.rows(offer_ids)
        return self.vectors_at(rows), rows >= 0

    def approximate(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Each row's cosine with ``query`` from the 8-bit codes (off by about 0.003; 0 for -1): the
        first step over many offers, whose best are then scored on the exact vectors."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        safe = np.where(rows >= 0, rows, 0)
        out = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), CHUNK):
            part = safe[start:start + CHUNK]
            out[start:start + CHUNK] = self._codes[part].astype(np.float32) @ query
        out *= self._scales[safe]
        out[rows < 0] = 0.0
        return out

    def stats(self) -> dict:
        return {"offers": len(self._rows), "mark": self.mark}


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    grown = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


_index: OfferIndex | None = None


def offer_index() -> OfferIndex:
    """The process's index (made on first use, filled by its first sync)."""
    global _index
    if _index is None:
        _index = OfferIndex()
    return _index


def reset_index() -> None:
    """Forget the process's index (tests that swap databases)."""
    global _index
    _index = None
