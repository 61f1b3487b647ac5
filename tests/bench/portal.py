"""`make bench-portal`: the public search page over HTTP at concurrency 16, against the catalog API
call it makes (the floor), in the same run on the same stack.

The data is the catalog benchmark's (tests/bench/catalog_data.py, 1,000,000 offers across the three
networks, in the bench stack's own PostgreSQL): reused when `make bench-catalog` left them there,
loaded otherwise. Each request is a search a visitor would make: a word, a postcode or town with
radius, sometimes a filter; the portal's page and the catalog's `GET /v1/public/{tenant}/offers`
with the very parameters the portal sends."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time

import asyncpg
import httpx

from deploy.local.stack import Stack
from tests.bench.catalog import configure_postgres, count_bench_offers
from tests.bench.catalog_data import load_offers
from tests.bench.flow import bench_config, percentiles

SEARCHES = [
    ("lueneburg", {"q": "Gabelstapler", "ort": "21335", "umkreis": "50"}),
    ("lueneburg", {"q": "Schweißen"}),
    ("hellweg-hochsauerland", {"ort": "59821 Arnsberg", "umkreis": "25", "format": "presence"}),
    ("westfaelisches-ruhrgebiet", {"q": "Buchhaltung", "foerderung": "bildungsgutschein"}),
    ("westfaelisches-ruhrgebiet", {"ort": "Dortmund", "umkreis": "100", "zeit": "full_time"}),
    ("hellweg-hochsauerland", {"q": "Pflege", "ort": "Kassel", "umkreis": "100"}),
    ("lueneburg", {}),
]


def catalog_params(page: dict) -> dict:
    """What the portal sends the catalog for a page's parameters (services/portal/domain.py)."""
    from starlette.datastructures import QueryParams

    from runtime.places import Gazetteer
    from services.portal.domain import parse_search

    gazetteer = catalog_params.gazetteer = getattr(catalog_params, "gazetteer", None) or Gazetteer().load()
    form, errors = parse_search(QueryParams(page), gazetteer.resolve)
    assert not errors, errors.items
    return form.catalog_params(20)


def catalog_ms(response: httpx.Response) -> float | None:
    """The catalog's part of a portal page, from its Server-Timing header (``catalog;dur=…``)."""
    for entry in response.headers.get("server-timing", "").split(","):
        name, _, params = entry.strip().partition(";")
        if name == "catalog" and params.startswith("dur="):
            return float(params[4:])
    return None


def hammer(urls: list[tuple[str, object]], concurrency: int, rounds: int,
           own: list[float] | None = None) -> tuple[list[float], int]:
    """``own`` (portal pages): per page, its time at the client less the catalog's part of it."""
    samples: list[float] = []
    failures = 0
    lock = threading.Lock()

    def worker(offset: int) -> None:
        nonlocal failures
        with httpx.Client(timeout=30) as client:
            for i in range(rounds):
                url, params = urls[(offset + i) % len(urls)]
                started = time.perf_counter()
                response = client.get(url, params=params)
                took = time.perf_counter() - started
                with lock:
                    # a search page that could not reach the catalog still answers 200: not a sample
                    if response.status_code == 200 and "vorübergehend nicht verfügbar" not in response.text:
                        samples.append(took)
                        if own is not None and (catalog := catalog_ms(response)) is not None:
                            own.append(took - catalog / 1000)
                    else:
                        failures += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=50, help="requests per client")
    parser.add_argument("--offers", type=int, default=1_000_000, help="the catalog benchmark's offers")
    args = parser.parse_args()
    # The sixteen clients stand for many visitors but all come from 127.0.0.1: the catalog's public
    # limits per client address (60 a minute for one page) would answer most of them 429.
    os.environ.update({"BR_RATE_LIMIT_PUBLIC": "1000000/minute", "BR_RATE_LIMIT_PUBLIC_PAGE": "1000000/minute"})
    stack = Stack(bench_config())
    configure_postgres(stack)
    catalog_db = stack.config.postgres_admin_url.rsplit("/", 1)[0] + f"/{stack.config.database_prefix}_catalog"
    present = asyncio.run(count_bench_offers(catalog_db)) if _exists(stack, catalog_db) else 0
    if present < args.offers:
        stack.reset_databases()
    else:
        asyncio.run(_settle_outbox(catalog_db))
    try:
        stack.start()
        c = stack.config
        if present >= args.offers:
            print(f"reusing the catalog benchmark's {present} offers", flush=True)
        else:
            started = time.perf_counter()
            loaded = asyncio.run(load_offers(catalog_db, args.offers, progress=lambda d, t: print(
                f"\r  loaded {d} of {t} offers", end="", flush=True)))
            print(f"\n{loaded} offers loaded in {time.perf_counter() - started:.0f} s", flush=True)
        portal = [(f"{c.url('portal')}/{tenant}/", page) for tenant, page in SEARCHES]
        catalog = [(f"{c.url('catalog')}/v1/public/{tenant}/offers", catalog_params(page))
                   for tenant, page in SEARCHES]
        hammer(portal + catalog, args.concurrency, 5)  # warm both (pools, caches, plans)
        floor, floor_failed = hammer(catalog, args.concurrency, args.rounds)
        own: list[float] = []
        pages, pages_failed = hammer(portal, args.concurrency, args.rounds, own)
        print(f"{args.offers} offers, concurrency {args.concurrency}, {args.rounds} requests per client")
        print(f"catalog GET /v1/public/{{tenant}}/offers  {percentiles(floor)}  failed {floor_failed}")
        print(f"portal  GET /{{tenant}}/ (search page)   {percentiles(pages)}  failed {pages_failed}")
        if floor and pages:
            q_floor = statistics.quantiles(floor, n=100, method="inclusive")
            q_pages = statistics.quantiles(pages, n=100, method="inclusive")
            print(f"difference of the two runs' percentiles: p50 {(q_pages[49] - q_floor[49]) * 1000:.1f} ms, "
                  f"p99 {(q_pages[98] - q_floor[98]) * 1000:.1f} ms")
        # Per page: the client's time less the catalog's part (Server-Timing), so the catalog's own
        # spread at a million offers does not hide or inflate the portal's.
        print(f"portal adds per page (its time less the catalog's) {percentiles(own)}  "
              "(goal: at most 20 ms at p99)")
    finally:
        stack.stop_all()


async def _settle_outbox(catalog_db: str) -> None:
    """The catalog benchmark's import leaves up to 100,000 offer events unpublished when it stops.
    Published now, they would have matching encode each offer while the searches are measured."""
    conn = await asyncpg.connect(catalog_db)
    try:
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL")
    finally:
        await conn.close()


def _exists(stack: Stack, catalog_db: str) -> bool:
    """Whether the catalog database is there with its offers table (a first run finds neither)."""
    async def check() -> bool:
        try:
            conn = await asyncpg.connect(catalog_db)
        except asyncpg.InvalidCatalogNameError:
            return False
        try:
            return bool(await conn.fetchval("SELECT to_regclass('offers') IS NOT NULL"))
        finally:
            await conn.close()

    return asyncio.run(check())


if __name__ == "__main__":
    main()
