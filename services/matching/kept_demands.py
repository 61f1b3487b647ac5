"""The vectors of the open demands an offer change reaches, kept in the process between changes.

An offer change first judges the offer against every open demand it reaches by meaning alone: one
matrix product over the demands' own and ranking vectors. At 100,000 open demands a change in a big
town reaches some 15,000 of them, and reading their vectors from PostgreSQL cost about 110 ms per
change. The process keeps them, each with its stamp (``demands.vectors_seq``: a new number whenever
either vector changes, migration 0019), and a change reads only the stamps and the vectors whose
stamp moved, within its own transaction: what it judges with is always the row it sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import numpy as np

from runtime.db import set_tenant
from services.matching.index import DIM, VECTOR_DTYPE, grown


@dataclass(frozen=True)
class Reached:
    """An open demand an offer change reached: what deciding how to judge it needs."""

    id: str
    best_score: float | None
    ranked_total: int | None
    encoded: bool  # it has its own vector (a demand always has, once opened)
    ranked: bool  # it has a ranking vector (its last full ranking's expanded vector)


class DemandVectors:
    """Open demands' own and ranking vectors by id, as stored (half precision), with their stamps.
    Bounded: past ``capacity`` demands it starts again from nothing (a change then reads them anew)."""

    def __init__(self, dim: int = DIM, capacity: int = 500_000) -> None:
        self.dim = dim
        self.capacity = capacity
        self.loaded = False  # every open demand's vectors read once (load_open)
        self._clear(1024)

    def _clear(self, size: int) -> None:
        self._slots: dict[str, int] = {}
        self._used = 0  # slots handed out (a demand that lost a vector leaves its slot unused)
        self._stamps = np.full(size, -1, dtype=np.int64)
        self._own = np.zeros((size, self.dim), dtype=VECTOR_DTYPE)
        self._ranking = np.zeros((size, self.dim), dtype=VECTOR_DTYPE)

    def __len__(self) -> int:
        return len(self._slots)

    async def load_open(self, conn: asyncpg.Connection, tenants: list[str]) -> int:
        """Keep every open demand's vectors, network by network (through its policy): at start, so that
        a fresh process's first offer changes read none. Answers how many are kept."""
        for tenant in tenants:
            async with conn.transaction():
                await set_tenant(conn, tenant)
                rows = await conn.fetch(
                    "SELECT id::text, vectors_seq, vector, ranking_vector FROM demands WHERE status = 'open'"
                    " AND vector IS NOT NULL AND ranking_vector IS NOT NULL")
            if self._used + len(rows) > self.capacity:
                break
            if self._used + len(rows) > len(self._stamps):
                self._grow(self._used + len(rows))
            for r in rows:
                self._keep(r["id"], r["vectors_seq"], r["vector"], r["ranking_vector"])
        self.loaded = True
        return len(self._slots)

    async def reached(self, conn: asyncpg.Connection, demand_ids: list[str]) -> tuple[list[Reached], dict[str, int]]:
        """The open ones of ``demand_ids`` (in no order), and each one's stamp."""
        rows = await conn.fetch(
            "SELECT id::text, vectors_seq, best_score, ranked_total, vector IS NOT NULL AS encoded,"
            " ranking_vector IS NOT NULL AS ranked FROM demands WHERE id = ANY($1::uuid[]) AND status = 'open'",
            demand_ids)
        return ([Reached(r["id"], r["best_score"], r["ranked_total"], r["encoded"], r["ranked"]) for r in rows],
                {r["id"]: r["vectors_seq"] for r in rows})

    async def vectors(self, conn: asyncpg.Connection, stamps: dict[str, int], ids: list[str]
                      ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Of the demands ``ids`` (stamped as in ``stamps``), those with both vectors, and their own and
        ranking vectors as float32 rows in that order; the vectors of a stamp not kept are read (and kept)."""
        stale = [i for i in ids if (slot := self._slots.get(i)) is None or self._stamps[slot] != stamps[i]]
        if self._used + len(stale) > self.capacity:
            self._clear(len(self._stamps))
            stale = ids
        if stale:
            rows = await conn.fetch(
                "SELECT id::text, vectors_seq, vector, ranking_vector FROM demands WHERE id = ANY($1::uuid[])",
                stale)
            for r in rows:  # (a row changed since its stamp was read is kept as it is now: either is the truth)
                if r["vector"] is not None and r["ranking_vector"] is not None:
                    self._keep(r["id"], r["vectors_seq"], r["vector"], r["ranking_vector"])
                else:
                    self._slots.pop(r["id"], None)
            for gone in set(stale) - {r["id"] for r in rows}:
                self._slots.pop(gone, None)
        found = [i for i in ids if i in self._slots]
        slots = np.fromiter((self._slots[i] for i in found), dtype=np.int64, count=len(found))
        return found, self._own[slots].astype(np.float32), self._ranking[slots].astype(np.float32)

    def _keep(self, demand_id: str, stamp: int, own: bytes, ranking: bytes) -> None:
        slot = self._slots.get(demand_id)
        if slot is None:
            slot, self._used = self._used, self._used + 1
            if slot >= len(self._stamps):
                self._grow(2 * len(self._stamps))
            self._slots[demand_id] = slot
        self._stamps[slot] = stamp
        self._own[slot] = np.frombuffer(own, dtype=VECTOR_DTYPE)
        self._ranking[slot] = np.frombuffer(ranking, dtype=VECTOR_DTYPE)

    def _grow(self, size: int) -> None:
        self._stamps, self._own, self._ranking = (
            grown(self._stamps, size, -1), grown(self._own, size), grown(self._ranking, size))


_kept: DemandVectors | None = None


def demand_vectors() -> DemandVectors:
    """The process's kept demand vectors (made on first use)."""
    global _kept
    if _kept is None:
        _kept = DemandVectors()
    return _kept


def reset_demand_vectors() -> None:
    """Forget them (tests that swap databases)."""
    global _kept
    _kept = None
