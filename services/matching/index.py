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


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).reshape(-1).astype(VECTOR_DTYPE).tobytes()


def from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


class OfferIndex:
    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self._rows: dict[str, int] = {}
        self._matrix = np.zeros((1024, dim), dtype=VECTOR_DTYPE)
        self.mark = 0  # the highest change sequence read
        self.loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def _put(self, offer_id: str, vector: np.ndarray) -> None:
        row = self._rows.get(offer_id)
        if row is None:
            row = len(self._rows)
            if row >= len(self._matrix):
                grown = np.zeros((len(self._matrix) * 2, self.dim), dtype=VECTOR_DTYPE)
                grown[: len(self._matrix)] = self._matrix
                self._matrix = grown
            self._rows[offer_id] = row
        self._matrix[row] = vector

    async def sync(self, conn: asyncpg.Connection) -> int:
        """Read the vectors written since the last call; answers how many."""
        read = 0
        async with self._lock:
            while True:
                rows = await conn.fetch(
                    "SELECT offer_id, change_seq, vector FROM offer_vectors WHERE change_seq > $1"
                    " ORDER BY change_seq LIMIT $2", self.mark, BATCH)
                for r in rows:
                    raw = np.frombuffer(r["vector"], dtype=VECTOR_DTYPE)
                    if raw.shape[0] == self.dim:
                        self._put(str(r["offer_id"]), raw)
                if rows:
                    self.mark = rows[-1]["change_seq"]
                read += len(rows)
                if len(rows) < BATCH:
                    break
            if self.loaded_at is None:
                self.loaded_at = time.time()
                log.info("offer index loaded", extra={"offers": len(self._rows), "mark": self.mark})
        return read

    def vectors(self, offer_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of the given offers as float32 rows (zeros where none is known yet), and which
        were known."""
        rows = np.array(list(map(self._rows.get, offer_ids, itertools.repeat(-1))), dtype=np.int64)
        found = rows >= 0
        out = self._matrix[np.where(found, rows, 0)].astype(np.float32)
        if not found.all():
            out[~found] = 0.0
        return out, found

    def stats(self) -> dict:
        return {"offers": len(self._rows), "mark": self.mark}


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
