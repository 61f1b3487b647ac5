"""`make bench-catalog`: search at national scale and the open-Qcat import.

1,000,000 generated offers (tests/bench/catalog_data.py) across three networks, loaded with COPY.
The issue's five query shapes and two more (a text with a funding and a format, which tantivy
answers too; a text narrowed by format and schedule), p50/p99 at concurrency 16: over HTTP (the
service as users call it), the same SQL directly through asyncpg in the same run (the floor), and
the text and text+filter shapes in tantivy over the same offers (the engine one might pick
instead). Then an open-Qcat import of a generated 100,000-offer file through the operators' command
line: offers/s and peak memory, against a 20,000-offer file to show memory does not grow with the file."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from xml.sax.saxutils import escape

import asyncpg
import httpx

from deploy.local.stack import Stack
from runtime.db import create_pool, tenant_transaction
from services.catalog import handlers, store
from services.catalog.bootstrap import CatalogSettings
from tests.bench.catalog_data import TENANTS, load_offers, offer_rows
from tests.bench.flow import bench_config
from tests.bench.node_load import node_load
from tests.bench.placement import tree_cpu_seconds
from tests.platform import Platform

CONCURRENCY = 16
WORDS = ["Gabelstapler", "Schweißen", "SPS", "Buchhaltung", "Pflege", "Fachinformatiker", "Deutsch", "Scrum",
         "CNC", "Elektrofachkraft", "Lagerlogistik", "Berufskraftfahrer", "Datenschutz", "Marketing",
         "Industriemeister", "Bilanzbuchhalter", "Büromanagement", "Excel", "Kranführerschein", "Mechatronik",
         "Hygiene", "Python", "Erzieher", "Staplerschein"]
PLACES = [("Dortmund", 51.51, 7.47), ("Arnsberg", 51.40, 8.06), ("Lüneburg", 53.25, 10.41), ("Kassel", 51.32, 9.5),
          ("Leipzig", 51.34, 12.37), ("München", 48.14, 11.58), ("Hamburg", 53.55, 9.99), ("Köln", 50.94, 6.96)]


def shapes() -> dict[str, list[dict]]:
    """The issue's five query shapes, tantivy's text + filter one and a text narrowed by format and
    schedule, each a cycle of parameter sets (varied words, places and filters)."""
    text = [{"q": w} for w in WORDS]
    radius = [{"q": w, "lat": lat, "lon": lon, "radius_km": r}
              for w, (_, lat, lon), r in zip(WORDS, itertools.cycle(PLACES), itertools.cycle([25, 50, 100]))]
    filters = [{"format": f, "schedule": s, "max_price_eur": p, "funding": "bildungsgutschein"}
               for f, s, p in zip(itertools.cycle(["presence", "online", "hybrid"]),
                                  itertools.cycle(["full_time", "part_time", "evening", "weekend"]),
                                  [500, 1000, 3000, 10000] * 6)]
    combined = [{"q": w, "lat": lat, "lon": lon, "radius_km": 100, "funding": "qcg",
                 "start_from": "2027-03-01", "start_to": "2027-09-30"}
                for w, (_, lat, lon) in zip(WORDS, itertools.cycle(PLACES))]
    facets = [{"q": w, "facets": "true"} for w in WORDS]
    # tantivy's second shape (tantivy_bench), so that both engines answer the same two
    funding_format = [{"q": w, "funding": "qcg", "format": "presence"} for w in WORDS]
    # a text narrowed as a user narrows it, by format and schedule: from a few hundred hits to thousands
    narrowed = [{"q": w, "format": f, "schedule": s}
                for w, f, s in zip(WORDS, itertools.cycle(["hybrid", "online", "presence", "blended", "distance"]),
                                   itertools.cycle(["evening", "weekend", "part_time", "full_time"]))]
    return {"text": text, "text + radius": radius, "filters only": filters,
            "text + radius + funding + start window": combined, "facets": facets,
            "text + funding + format": funding_format, "text + format + schedule": narrowed}


def query_of(params: dict) -> tuple[store.OfferQuery, bool]:
    """The OfferQuery the API builds from these parameters (for the direct-SQL floor)."""
    lists = {k: [params[k]] for k in ("format", "schedule", "qualification", "funding") if k in params}
    query = store.OfferQuery(
        q=params.get("q"), lat=params.get("lat"), lon=params.get("lon"), radius_km=params.get("radius_km"),
        formats=lists.get("format"), schedules=lists.get("schedule"), qualifications=lists.get("qualification"),
        funding=lists.get("funding"),
        max_price_eur=params.get("max_price_eur"),
        start_from=date.fromisoformat(params["start_from"]) if "start_from" in params else None,
        start_to=date.fromisoformat(params["start_to"]) if "start_to" in params else None)
    return query, params.get("facets") == "true"


def summary(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000


class CpuShares:
    """CPU per request of the catalog, PostgreSQL (its backends) and this process (the SQL floor's
    client), read from /proc around a phase: where a shape's milliseconds go on the two cores."""

    def __init__(self, stack: Stack) -> None:
        # (a PostgreSQL the stack did not start itself is not its to read)
        parts = (("catalog", "catalog"), ("PostgreSQL", "postgres"))
        self.roots = {name: stack.processes[key].pid for name, key in parts if key in stack.processes}

    def read(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {name: tree_cpu_seconds(pid) for name, pid in self.roots.items()} | {
            "bench": own.ru_utime + own.ru_stime}

    def per_request(self, before: dict[str, float], requests: int, clients_ms: float | None = None) -> dict[str, float]:
        """ms per request of each part; the clients' as given (Node's own count), else this process's."""
        spent = {name: (seconds - before[name]) * 1000 / requests for name, seconds in self.read().items()}
        own = spent.pop("bench")
        return spent | {"clients": own if clients_ms is None else clients_ms}


def run_http(base_url: str, token: str, params: list[dict], requests: int) -> tuple[list[float], float]:
    """The shape's searches over HTTP from Node's clients (tests/bench/node_load.py): each answer's
    time, and the clients' own CPU per request (ms)."""
    urls = [str(httpx.URL(f"{base_url}/v1/offers", params=p)) for p in params]
    answers, clients_ms = node_load(urls, CONCURRENCY, requests // CONCURRENCY,
                                    headers={"Authorization": f"Bearer {token}"})
    if failed := [a for a in answers if a["status"] != 200]:
        raise RuntimeError(f"{len(failed)} of {len(answers)} searches failed, the first: {failed[0]}")
    return [a["ms"] / 1000 for a in answers], clients_ms


async def run_sql(pool: asyncpg.Pool, params: list[dict], requests: int) -> list[float]:
    samples: list[float] = []
    feed = itertools.cycle(params)

    async def worker(count: int) -> None:
        for i in range(count):
            query, facets = query_of(next(feed))
            started = time.perf_counter()
            async with tenant_transaction(pool, TENANTS[i % 3]) as conn:
                await handlers.search_offers(conn, query, with_facets=facets)
            samples.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    return samples


def tantivy_bench(n: int, requests: int, workdir: Path) -> dict[str, tuple[float, float]]:
    import tantivy

    builder = tantivy.SchemaBuilder()
    for name in ("title", "skills", "description"):
        builder.add_text_field(name, stored=name == "title", tokenizer_name="de_stem")
    for name in ("format", "funding", "visible_to"):
        builder.add_text_field(name, tokenizer_name="raw")
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    schema = builder.build()
    index = tantivy.Index(schema, path=str(workdir))
    index.register_tokenizer("de_stem", tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(
        tantivy.Filter.lowercase()).filter(tantivy.Filter.stemmer("german")).build())
    writer = index.writer(heap_size=512 * 1024 * 1024)
    started = time.perf_counter()
    for offer in offer_rows(n):
        if offer["status"] != "published":
            continue
        writer.add_document(tantivy.Document(
            id=str(offer["id"]), title=offer["title"], skills=" ".join(offer["skills"]),
            description=offer["description"], format=offer["format"],
            funding=[k for k, v in offer["funding"].items() if v] or ["none"],
            visible_to=[offer["tenant"], *(["*"] if offer["scope"] == "all" else offer["networks"])]))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    print(f"  tantivy index of {n} offers built in {time.perf_counter() - started:.0f} s", flush=True)
    searcher = index.searcher()
    results: dict[str, tuple[float, float]] = {}
    for shape, extra in (("text", ""), ("text + funding + format", " AND funding:qcg AND format:presence")):
        def one(i: int, extra: str = extra) -> float:
            word = WORDS[i % len(WORDS)]
            text = f'(title:"{word}" OR skills:"{word}" OR description:"{word}")'
            tenant = f'(visible_to:{TENANTS[i % 3]} OR visible_to:"*")'
            query = index.parse_query(f"{text} AND {tenant}{extra}")
            t0 = time.perf_counter()
            hits = searcher.search(query, 20, count=True)
            _ = [searcher.doc(address)["id"] for _, address in hits.hits]
            return time.perf_counter() - t0

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results[shape] = summary(list(pool.map(one, range(requests))))
    return results


def write_openqcat(path: Path, n: int) -> None:
    """An open-Qcat 1.1 NEW_CATALOG of n offers, each with its dated instances (streamed out)."""
    with path.open("w", encoding="iso-8859-15", errors="replace") as out:
        out.write('<?xml version="1.0" encoding="iso-8859-15"?>\n<OPENQCAT version="1.1"><HEADER/>'
                  '<NEW_CATALOG FULLCATALOG="true">\n')
        for i, offer in enumerate(offer_rows(n, seed=7)):
            product = f"Q{i}"
            form = {"presence": 101, "online": 202, "hybrid": 205, "blended": 201, "distance": 102}[offer["format"]]
            first = offer["sessions"][0]
            out.write(
                f'<SERVICE mode="new"><PRODUCT_ID>{product}</PRODUCT_ID><SERVICE_DETAILS>'
                f'<TITLE>{escape(offer["title"])}</TITLE><DESCRIPTION_LONG>{escape(offer["description"])}'
                f'</DESCRIPTION_LONG>' + "".join(f"<KEYWORD>{escape(k)}</KEYWORD>" for k in offer["skills"]) +
                f'<SERVICE_MODULE><EDUCATION type="true"><COURSE_ID>{product}</COURSE_ID><EXTENDED_INFO>'
                f'<INSTRUCTION_FORM type="{form}"/><INSTRUCTION_TIME type="1">Vollzeit</INSTRUCTION_TIME>'
                f'<FUNDING_TYPES_FEDERAL type="2">Bildungsgutschein</FUNDING_TYPES_FEDERAL></EXTENDED_INFO>'
                f'<MODULE_COURSE><LOCATION><ZIP>{first["zip"]}</ZIP><CITY>{escape(first["city"])}</CITY></LOCATION>'
                f'</MODULE_COURSE></EDUCATION></SERVICE_MODULE></SERVICE_DETAILS>'
                f'<SERVICE_PRICE_DETAILS><SERVICE_PRICE><PRICE_AMOUNT>{offer["price_eur"] or 0}</PRICE_AMOUNT>'
                f'</SERVICE_PRICE></SERVICE_PRICE_DETAILS></SERVICE>\n')
            for j, s in enumerate(offer["sessions"]):
                out.write(
                    f'<SERVICE mode="new"><PRODUCT_ID>{product}-{j}</PRODUCT_ID><SERVICE_DETAILS><TITLE/>'
                    f'<SERVICE_DATE><START_DATE>{s["start"]}T00:00:00+01:00</START_DATE>'
                    f'<END_DATE>{s["end"]}T00:00:00+01:00</END_DATE></SERVICE_DATE><SERVICE_MODULE>'
                    f'<EDUCATION type="false"><COURSE_ID>{product}</COURSE_ID><MODULE_COURSE><LOCATION>'
                    f'<ZIP>{s["zip"]}</ZIP><CITY>{escape(s["city"])}</CITY></LOCATION></MODULE_COURSE>'
                    f'</EDUCATION></SERVICE_MODULE></SERVICE_DETAILS></SERVICE>\n')
        out.write("</NEW_CATALOG></OPENQCAT>\n")


def import_bench(stack: Stack, provider_id: str, path: Path) -> tuple[float, float, float, dict]:
    """Run the operators' import command as its own process: wall time, its peak memory and that of
    the process it parses the file in (MiB)."""
    env = os.environ | stack.service_env("catalog")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", "import resource, sys; from services.catalog.cli import main; code = main(sys.argv[1:]);"
         " print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
         " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)",
         "import-openqcat", str(path), "--tenant", TENANTS[0], "--provider-id", provider_id],
        env=env, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    importer_kib, parser_kib = map(int, result.stderr.rsplit("MAXRSS", 1)[1].split()[:2])
    return elapsed, importer_kib / 1024, parser_kib / 1024, json.loads(result.stdout)


SHARED_BUFFERS = "2GB"


def configure_postgres(stack: Stack) -> None:
    """Memory for a million offers in the bench's own PostgreSQL: ``shared_buffers`` 2 GB (of 24).
    With the default 128 MB, a tenth of the offers and their indexes fit, and every search read most
    of its pages from the operating system's cache instead. Set with ALTER SYSTEM; the server the
    stack started is restarted for it (one started by someone else must be restarted by them)."""
    stack.ensure_postgres()

    async def set_memory() -> bool:
        conn = await asyncpg.connect(stack.config.postgres_admin_url)
        try:
            if await conn.fetchval("SHOW shared_buffers") == SHARED_BUFFERS:
                return False
            await conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
            return True
        finally:
            await conn.close()

    if asyncio.run(set_memory()):
        if "postgres" in stack.processes:
            stack.stop("postgres")
            stack.ensure_postgres()
        else:
            print(f"  shared_buffers set to {SHARED_BUFFERS}: restart the bench's PostgreSQL for it to apply",
                  flush=True)


async def catalog_exists(catalog_db: str) -> bool:
    """Whether the catalog database is there with its offers table (a first run finds neither)."""
    try:
        conn = await asyncpg.connect(catalog_db)
    except asyncpg.InvalidCatalogNameError:
        return False
    try:
        return bool(await conn.fetchval("SELECT to_regclass('offers') IS NOT NULL"))
    finally:
        await conn.close()


async def settle_previous_run(catalog_db: str) -> None:
    """What the import part leaves behind when it stops: up to 100,000 offer events unpublished (its
    broker, in memory, is gone) and 120,000 new offers not yet vacuumed. Published by the next run, the
    events would have the relay send and matching encode each offer while its searches are measured;
    unvacuumed, the offers' rows are not all-visible and the text indexes hold a pending list each
    search reads through (120,000 rows are too few to start autovacuum on a million)."""
    conn = await asyncpg.connect(catalog_db)
    try:
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL")
        await conn.execute("VACUUM (ANALYZE) offers")
        await conn.execute("VACUUM (ANALYZE) offer_sessions")
    finally:
        await conn.close()


async def count_bench_offers(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM offers WHERE external_id LIKE 'bench-%'")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=320, help="per shape and path")
    parser.add_argument("--import-offers", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true", help="keep the databases of the last run and its offers")
    parser.add_argument("--only", choices=("search", "import"), help="measure one part (default: both)")
    args = parser.parse_args()
    stack = Stack(bench_config())
    configure_postgres(stack)
    catalog_db = stack.config.service_admin_url("catalog")
    if not args.reuse:
        stack.reset_databases()
    elif asyncio.run(catalog_exists(catalog_db)):
        asyncio.run(settle_previous_run(catalog_db))
    print("starting the stack …", flush=True)
    stack.start()
    results: list[tuple[str, str, float, float]] = []
    try:
        platform = Platform(stack)
        started = time.perf_counter()
        present = asyncio.run(count_bench_offers(catalog_db))
        if args.reuse and present >= args.offers:
            print(f"  reusing the {present} offers of the last run", flush=True)
        else:
            loaded = asyncio.run(load_offers(catalog_db, args.offers, progress=lambda d, t: print(
                f"\r  loaded {d} of {t} offers", end="", flush=True)))
            print(f"\n  {loaded} offers loaded and indexed in {time.perf_counter() - started:.0f} s", flush=True)
        cpu = CpuShares(stack)
        # The SQL floor's connections: the catalog's own pool, one connection per client, kept for the
        # whole run as the catalog keeps its own (a new backend's first search compiles the search
        # functions and reads the tables' catalog afresh, some 15 ms more than a warm one's, which a
        # pool opened per phase charged to the floor), on one event loop of its own.
        floor = asyncio.Runner()
        floor_pool = floor.run(create_pool(CatalogSettings(
            postgres_host=stack.config.host, postgres_port=stack.config.ports["postgres"],
            database_prefix=stack.config.database_prefix), min_size=CONCURRENCY, max_size=CONCURRENCY,
        )) if args.only != "import" else None
        if args.only != "import":
            # Every shape's parameters down each path, on every connection, before anything is
            # measured: the first phase otherwise read the indexes into PostgreSQL's buffers (a
            # restarted one's are empty) for the phases after it, and it was always the text
            # shape's HTTP phase.
            print("  warming up: every shape's searches over HTTP and SQL", flush=True)
            for n, params in enumerate(shapes().values()):
                warm = CONCURRENCY * max(1, len(params) - CONCURRENCY + 1)  # client k asks from the k-th on
                run_http(stack.config.url("catalog"), platform.token(f"{TENANTS[n % 3]}-employer"), params, warm)
                floor.run(run_sql(floor_pool, params, warm))
        for name, params in shapes().items() if args.only != "import" else ():
            tenant = TENANTS[len(results) % 3]
            before = cpu.read()
            http, clients_ms = run_http(stack.config.url("catalog"), platform.token(f"{tenant}-employer"), params,
                                        args.requests)
            http_cpu = cpu.per_request(before, len(http), clients_ms)
            before = cpu.read()
            sql = floor.run(run_sql(floor_pool, params, args.requests))
            sql_cpu = cpu.per_request(before, len(sql))  # the SQL floor's client is this process
            for path, samples, spent in (("HTTP", http, http_cpu), ("SQL (asyncpg, same handler)", sql, sql_cpu)):
                p50, p99 = summary(samples)
                results.append((name, path, p50, p99))
                print(f"  {name:42s} {path:28s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  CPU a request: "
                      + ", ".join(f"{part} {ms:.2f}" for part, ms in spent.items()) + " ms",
                      flush=True)
        if floor_pool is not None:
            floor.run(floor_pool.close())
        floor.close()
        with tempfile.TemporaryDirectory() as workdir:
            tantivy = tantivy_bench(args.offers, args.requests, Path(workdir)) if args.only != "import" else {}
            for shape, (p50, p99) in tantivy.items():
                results.append((shape, "tantivy", p50, p99))
                print(f"  {shape:42s} {'tantivy':28s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms", flush=True)
        with platform.client("catalog", f"{TENANTS[0]}-admin") as api:
            provider = api.post("/v1/providers", json={"name": "Import-Bench", "emails": ["i@b.example"]}).json()
        # Matching encodes every imported offer (some 35 ms each): on these two cores it would take the
        # second import's CPU for the first one's events. The import is measured alone.
        stack.stop("matching")
        with tempfile.TemporaryDirectory() as workdir:
            for size in (args.import_offers // 5, args.import_offers) if args.only != "search" else ():
                path = Path(workdir) / f"openqcat-{size}.xml"
                write_openqcat(path, size)
                elapsed, peak, parser_peak, report = import_bench(stack, provider["id"], path)
                print(f"  open-Qcat import of {size} offers ({path.stat().st_size / 2**20:.0f} MiB): "
                      f"{elapsed:.1f} s, {size / elapsed:,.0f} offers/s, peak RSS {peak:.0f} MiB "
                      f"(its parsing process {parser_peak:.0f} MiB), "
                      f"created {report['counts']['created']}, rejected {report['counts']['rejected']}", flush=True)
    finally:
        stack.stop_all()
    print("\n| shape | path | p50 | p99 |\n|---|---|---|---|")
    for name, path, p50, p99 in results:
        print(f"| {name} | {path} | {p50:.1f} ms | {p99:.1f} ms |")


if __name__ == "__main__":
    main()
