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
import functools
import os
import statistics
import time
from collections.abc import Callable

import httpx

from deploy.local.stack import Stack
from tests.bench.catalog import catalog_exists, configure_postgres, count_bench_offers, settle_previous_run
from tests.bench.catalog_data import load_offers
from tests.bench.flow import bench_config, percentiles
from tests.bench.node_load import node_load
from tests.bench.placement import Pods, cpu_seconds, descendants, pin, pods_missing
from tests.platform import server_timing

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


def hammer(urls: list[tuple[str, object]], concurrency: int, rounds: int,
           own: list[float] | None = None, inside: list[float] | None = None,
           placed: Callable[[], None] | None = None) -> tuple[list[float], int, float]:
    """``concurrency`` clients × ``rounds`` requests from Node (tests/bench/load.mjs), so the clients'
    own cost stays out of the figures. ``own`` (portal pages): per page, its time at the client less
    the catalog's part of it; ``inside``: its time inside the portal less the catalog's part;
    ``placed``: run first in the clients' process (their core or cgroup)."""
    answers, clients_ms = node_load([str(httpx.URL(url, params=params)) for url, params in urls],
                                    concurrency, rounds, placed=placed)
    samples: list[float] = []
    failures = 0
    for answer in answers:
        if answer["status"] != 200 or answer["unavailable"]:
            failures += 1
            continue
        took = answer["ms"] / 1000
        samples.append(took)
        # the page's spans: ``catalog`` (the catalog's part of the page) and ``total`` (the page inside
        # the portal, from its request to its answer)
        spans = server_timing(answer["timing"])
        if own is not None and (catalog := spans.get("catalog")) is not None:
            own.append(took - catalog / 1000)
            if inside is not None and (total := spans.get("total")) is not None:
                inside.append((total - catalog) / 1000)
    return samples, failures, clients_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=50, help="requests per client")
    parser.add_argument("--offers", type=int, default=1_000_000, help="the catalog benchmark's offers")
    parser.add_argument("--fresh", action="store_true", help="load the offers anew even when enough are there")
    parser.add_argument("--split-cores", action="store_true",
                        help="the portal and the clients on the second core, everything else on the first: "
                             "the portal measured on a core of its own, as its own pods give it in production")
    parser.add_argument("--pods", action="store_true",
                        help="both cores shared, each part of the stack in a CPU cgroup of its own weighted by "
                             "its manifest's CPU request, as the kubelet places pods (tests/bench/placement.py)")
    args = parser.parse_args()
    if args.split_cores and args.pods:
        parser.error("--split-cores or --pods, not both")
    if args.pods and (missing := pods_missing()) is not None:
        parser.error(missing)
    # The sixteen clients stand for many visitors but all come from 127.0.0.1: the catalog's public
    # limits per client address (60 a minute for one page) would answer most of them 429.
    os.environ.update({"BR_RATE_LIMIT_PUBLIC": "1000000/minute", "BR_RATE_LIMIT_PUBLIC_PAGE": "1000000/minute"})
    stack = Stack(bench_config())
    pods: Pods | None = None
    placed: Callable[[], None] | None = None  # what the load generator's process does first: its core or cgroup
    configure_postgres(stack)
    catalog_db = stack.config.service_admin_url("catalog")
    present = asyncio.run(count_bench_offers(catalog_db)) if asyncio.run(catalog_exists(catalog_db)) else 0
    if args.fresh or present < args.offers:
        present = 0
        stack.reset_databases()
    else:
        asyncio.run(settle_previous_run(catalog_db))
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
        if args.split_cores:
            portal_pid = stack.processes["portal"].pid
            for pid in descendants(os.getpid()) | {os.getpid()}:
                pin(pid, {1} if pid == portal_pid else {0})
            placed = functools.partial(os.sched_setaffinity, 0, {1})
            print("cores split: the portal and the clients on core 1, the catalog, PostgreSQL and the rest on core 0")
        if args.pods:
            pods = Pods(stack.processes)
            placed = pods.clients()
            print(f"as pods: each part in a CPU cgroup of its own, cpu.shares {pods.describe()}")
        portal = [(f"{c.url('portal')}/{tenant}/", page) for tenant, page in SEARCHES]
        catalog = [(f"{c.url('catalog')}/v1/public/{tenant}/offers", catalog_params(page))
                   for tenant, page in SEARCHES]
        hammer(portal + catalog, args.concurrency, 5, placed=placed)  # warm both (pools, caches, plans)
        floor, floor_failed, floor_clients_ms = hammer(catalog, args.concurrency, args.rounds, placed=placed)
        own: list[float] = []
        inside: list[float] = []
        portal_cpu, began = cpu_seconds(stack.processes["portal"].pid), time.perf_counter()
        pages, pages_failed, pages_clients_ms = hammer(portal, args.concurrency, args.rounds, own, inside, placed)
        portal_cpu, took = cpu_seconds(stack.processes["portal"].pid) - portal_cpu, time.perf_counter() - began
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
        print(f"of it inside the portal (Server-Timing total less catalog) {percentiles(inside)}")
        print(f"the clients' own CPU per request (Node, start-up included): catalog run {floor_clients_ms:.2f} ms, "
              f"portal run {pages_clients_ms:.2f} ms")
        if pages:  # what sizes its pods' CPU request: this at the pages a second one pod is to serve
            served = len(pages) + pages_failed
            print(f"the portal's own CPU per page: {portal_cpu / served * 1000:.2f} ms ({portal_cpu:.1f} s for "
                  f"{served} pages in {took:.1f} s, {served / took:.0f} a second: "
                  f"{portal_cpu / took * 1000:.0f} millicores)")
    finally:
        stack.stop_all()
        if pods is not None:
            pods.close()


if __name__ == "__main__":
    main()
