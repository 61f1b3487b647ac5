"""What a new demand and an offer change cost matching, in-process, part by part:
``.venv/bin/python -m tests.bench.matching_steps [--steps N] [--seed S]``.

Runs on the database ``make bench-matching`` (or ``tests.bench.matching --reuse``) left loaded: start
that bench's PostgreSQL first (its data folder is printed when missing). Loads the offer index and
the open demands' vectors (one BLAS thread, the encoder warmed, the heap settled) as the service does at start, then
- opens N demands as the bench posts them (``handlers.open_demand`` with the bench's generated bodies);
- makes N offer changes as the bench makes them: an offer shared with every network, at the town of
  a random open demand, turned into that demand's topic with its sessions moved into the demand's
  window (``handlers.offer_changed``).
Each runs in a transaction that is rolled back, so every run sees the same data. Prints the median
and the 90th percentile of the whole step, of encoding its text, of the Python work between
statements, and of its statements grouped by kind (their time includes the round trip and decoding
the rows)."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import asyncpg

from contracts import OFFER_UPDATED
from deploy.local.stack import port_open, postgres_data_dir
from runtime import heap
from runtime.db import init_connection, set_tenant
from runtime.events import Event
from services.matching import clusters, encoder, geo, handlers
from services.matching.domain import DemandIn
from services.matching.index import OfferIndex, offer_index
from services.matching.kept_demands import demand_vectors
from tests.bench.catalog_data import ADDITIONS, TOPICS
from tests.bench.flow import bench_config
from tests.bench.matching import demand_rows

CALLS = "calls of "  # a kind's count is kept beside its time under this prefix


class _Timed:
    """A connection that adds each statement's time to its kind (its first words)."""

    def __init__(self, conn: asyncpg.Connection, spent: dict[str, float]) -> None:
        self._conn, self._spent = conn, spent

    def __getattr__(self, name: str):
        method = getattr(self._conn, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            return method

        async def timed(sql: str, *args, **kwargs):
            started = time.perf_counter()
            try:
                return await method(sql, *args, **kwargs)
            finally:
                kind = " ".join(sql.split())[:72]
                self._spent[kind] += time.perf_counter() - started
                self._spent[CALLS + kind] += 1
        return timed


async def _changes(conn: asyncpg.Connection, count: int, seed: int) -> list[dict]:
    """Offer changes as the bench makes them (see the module's text)."""
    rng = random.Random(seed)
    out = []
    tenants = [r["id"] for r in await conn.fetch("SELECT id FROM known_tenants WHERE status = 'active'")]
    while len(out) < count:
        async with conn.transaction():
            await set_tenant(conn, rng.choice(tenants))
            demand = await conn.fetchval("SELECT state FROM demands WHERE status = 'open' AND 'presence' = ANY(formats)"
                                         " ORDER BY id OFFSET $1 LIMIT 1", rng.randrange(20_000))
        if demand is None:
            continue
        offer = await conn.fetchval(
            "SELECT o.state FROM offers o JOIN offer_sessions s ON s.offer_id = o.id WHERE s.city = $1"
            " AND s.n = 0 AND o.visibility_scope = 'all' AND o.format = 'presence' AND o.status = 'published'"
            " OFFSET $2 LIMIT 1", demand["employer"]["city"], rng.randrange(50))
        topic = next((t for t in TOPICS if t[0] in demand["title"]), None)
        if offer is None or topic is None:
            continue
        out.append({**offer, "title": f"{topic[0]} {rng.choice(ADDITIONS)}", "skills": topic[1],
                    "description": topic[2], "version": offer["version"] + 1, "price_eur": 390,
                    "sessions": [{**s, "start": demand["start_from"]} for s in offer["sessions"]]})
    return out


def _quantiles(samples: list[float]) -> str:
    samples = sorted(samples)
    return f"{statistics.median(samples) * 1000:7.1f} {samples[int(0.9 * (len(samples) - 1))] * 1000:7.1f}"


# Python parts timed inside a step (each a sync function, looked up where its callers find it)
PARTS = [(OfferIndex, "feasible", "feasible set (the index's masks)"),
         (handlers, "meaning_step", "meaning step (8-bit codes, then exact)"),
         (handlers.relevance, "rank", "full relevance (words, skills, place)")]


def _timing(owner, name: str, spent: dict[str, float], label: str):
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - t0
    return original, timed


async def _measure(conn: asyncpg.Connection, what: str, steps: list[tuple[str, Callable]]) -> None:
    """Each step (its tenant, and a call with the connection) in a transaction rolled back after."""
    totals, encodes, spents, pythons = [], [], [], []
    for tenant, step in steps:
        spent: dict[str, float] = defaultdict(float)
        python: dict[str, float] = defaultdict(float)
        patched = [(handlers, "_encode", *_timing(handlers, "_encode", python, "encoding"))]
        patched += [(owner, name, *_timing(owner, name, python, label)) for owner, name, label in PARTS]
        for owner, name, _, timed in patched:
            setattr(owner, name, timed)
        tx = conn.transaction()
        await tx.start()
        try:
            await set_tenant(conn, tenant)
            t0 = time.perf_counter()
            await step(_Timed(conn, spent))
            totals.append(time.perf_counter() - t0)
        finally:
            await tx.rollback()
            for owner, name, original, _ in patched:
                setattr(owner, name, original)
        encodes.append(python.pop("encoding", 0.0))
        spents.append(spent)
        pythons.append(python)
    calls = [{k[len(CALLS):]: v for k, v in spent.items() if k.startswith(CALLS)} for spent in spents]
    spents = [{k: v for k, v in spent.items() if not k.startswith(CALLS)} for spent in spents]
    statements = [sum(spent.values()) for spent in spents]
    print(f"\n{len(steps)} {what} (rolled back), ms:{'median':>{50 - len(what)}}     p90")
    print(f"  whole step                                              {_quantiles(totals)}")
    print(f"  encoding its text                                       {_quantiles(encodes)}")
    print(f"  Python between statements                               "
          f"{_quantiles([t - e - q for t, e, q in zip(totals, encodes, statements, strict=True)])}")
    for _, _, label in PARTS:
        print(f"    {label:50.50s} {_quantiles([python.get(label, 0.0) for python in pythons])}")
    print(f"  all statements                                          {_quantiles(statements)}"
          f"   ({statistics.median(sum(c.values()) for c in calls):.0f} at the median)")
    parts = {kind: [spent.get(kind, 0.0) for spent in spents] for kind in set().union(*spents)}
    for kind, samples in sorted(parts.items(), key=lambda kv: -statistics.median(kv[1])):
        if statistics.median(samples) >= 0.0005:
            print(f"    {kind:50.50s} {_quantiles(samples)}"
                  f"   ({statistics.median(c.get(kind, 0) for c in calls):.0f}×)")


async def run(count: int, seed: int) -> None:
    c = bench_config()
    if not port_open(c.host, c.ports["postgres"]):
        raise SystemExit(f"start the bench's PostgreSQL first (data in {postgres_data_dir(c.var_dir)},"
                         f" port {c.ports['postgres']})")
    dsn = f"postgresql://br_matching_app@{c.host}:{c.ports['postgres']}/{c.database_prefix}_matching"
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        started = time.perf_counter()
        await offer_index().sync(conn)
        tenants = [r["id"] for r in await conn.fetch("SELECT id FROM known_tenants WHERE status = 'active'")]
        kept = await demand_vectors().load_open(conn, tenants)
        await asyncio.to_thread(geo.region_of_point, 53.25, 10.41)  # warmed as the service's readiness does
        await asyncio.to_thread(clusters.warm)
        encoder.one_blas_thread()
        heap.settle()
        print(f"index of {len(offer_index())} offers and {kept} open demands' vectors loaded in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        demands = demand_rows(2 * count, seed=seed)[count:]
        await _measure(conn, "new demands", [
            (d["tenant"], lambda c, d=d: handlers.open_demand(c, d["tenant"], DemandIn.model_validate(d["body"]),
                                                              "bench")) for d in demands])
        await _measure(conn, "offer changes", [
            (o["tenant"], lambda c, o=o: handlers.offer_changed(c, Event(OFFER_UPDATED, "catalog", o["tenant"],
                                                                         o["id"], o)))
            for o in await _changes(conn, count, seed)])
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30, help="demands opened and offers changed")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.steps, args.seed))


if __name__ == "__main__":
    main()
