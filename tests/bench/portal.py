"""`make bench-portal`: the public search page over HTTP at concurrency 16, against the catalog API
call it makes (the floor), in the same run on the same stack.

The stack is the bench stack (own ports and databases), filled with `make up`'s demo data
(deploy/local/seed.py: 330 offers in three networks), or the data already there. Each request is
a search a visitor would make: a word, a postcode with radius, sometimes a filter; the portal's
page and the catalog's `GET /v1/public/{tenant}/offers` with the very parameters the portal sends."""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx

from deploy.local.seed import seed
from deploy.local.stack import Stack
from tests.bench.flow import bench_config, percentiles

SEARCHES = [
    ("lueneburg", {"q": "Staplerschein", "ort": "21335", "umkreis": "50"}),
    ("lueneburg", {"q": "Schweißen"}),
    ("hellweg-hochsauerland", {"ort": "59821 Arnsberg", "umkreis": "25", "format": "presence"}),
    ("westfaelisches-ruhrgebiet", {"q": "SAP", "foerderung": "bildungsgutschein"}),
    ("westfaelisches-ruhrgebiet", {"ort": "Dortmund", "umkreis": "100", "zeit": "full_time"}),
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


def hammer(urls: list[tuple[str, object]], concurrency: int, rounds: int) -> tuple[list[float], int]:
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
                    if response.status_code == 200:
                        samples.append(took)
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
    args = parser.parse_args()
    stack = Stack(bench_config())
    stack.reset_databases()
    try:
        stack.start()
        c = stack.config
        probe = httpx.get(f"{c.url('catalog')}/v1/public/lueneburg/offers")
        if probe.status_code == 404 and probe.json().get("title") == "Not Found":
            print("bench-portal: skipped, the catalog has no public offer API (GET /v1/public/{tenant}/offers) yet")
            return
        made = seed(c.url("catalog"), c.url("matching"), c.issuer_url)
        print(f"demo data: {made or 'already there'}")
        time.sleep(2)
        portal = [(f"{c.url('portal')}/{tenant}/", page) for tenant, page in SEARCHES]
        catalog = [(f"{c.url('catalog')}/v1/public/{tenant}/offers", catalog_params(page))
                   for tenant, page in SEARCHES]
        hammer(portal + catalog, args.concurrency, 5)  # warm both (pools, caches, plans)
        floor, floor_failed = hammer(catalog, args.concurrency, args.rounds)
        pages, pages_failed = hammer(portal, args.concurrency, args.rounds)
        print(f"concurrency {args.concurrency}, {args.rounds} requests per client")
        print(f"catalog GET /v1/public/{{tenant}}/offers  {percentiles(floor)}  failed {floor_failed}")
        print(f"portal  GET /{{tenant}}/ (search page)   {percentiles(pages)}  failed {pages_failed}")
        if floor and pages:
            q_floor = statistics.quantiles(floor, n=100, method="inclusive")
            q_pages = statistics.quantiles(pages, n=100, method="inclusive")
            print(f"portal adds: p50 {(q_pages[49] - q_floor[49]) * 1000:.1f} ms, "
                  f"p99 {(q_pages[98] - q_floor[98]) * 1000:.1f} ms (goal: at most 20 ms at p99)")
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
