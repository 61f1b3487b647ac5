"""Where an open-Qcat import's time goes: one import of a generated file into the catalog bench's
database (left by `make bench-catalog`, with its 1,000,000 offers), in this process and rolled back,
so it can be repeated on the same offers. Prints the wall time, the CPU of this process and of its
PostgreSQL backend, the wall time of each kind of statement, and how long no statement was in
flight (the import's own Python work holding PostgreSQL up), by the statements around each gap.

    .venv/bin/python -m tests.bench.import_phases [--offers 20000] [--parse in-thread|apart]
                                                  [--whole-first]

``--parse apart`` parses in a process of its own, as the operators' command does; ``in-thread`` as
the API does. ``--whole-first`` applies the file only once it is read whole (what the import falls
back to when the file's order needs it). The offers are vacuumed before the import (a rolled-back
import leaves its rows dead). A diagnosis: the figures the goals are judged on come from
`make bench-catalog`."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg

from deploy.local.stack import Stack
from runtime.db import TENANT_SETTING, init_connection
from services.catalog import importing, openqcat
from services.catalog.bootstrap import CatalogSettings
from services.catalog.domain import Acting
from tests.bench.catalog import write_openqcat
from tests.bench.catalog_data import TENANTS
from tests.bench.flow import bench_config
from tests.integration.catalog_setup import act_as_the_import_for_a_new_provider

STATEMENTS = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "copy_records_to_table")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_statements(spent: Counter, timeline: list[tuple[float, float, str]]) -> None:
    """Count each statement's wall time by its first words, and keep when each ran (asyncpg's
    methods wrapped)."""
    for name in STATEMENTS:
        method = getattr(asyncpg.Connection, name)

        async def timed(self, query, *args, _method=method, _name=name, **kwargs):
            started = time.perf_counter()
            try:
                return await _method(self, query, *args, **kwargs)
            finally:
                ended, words = time.perf_counter(), " ".join(str(query).split())
                spent[f"{_name} {words[:72]}"] += ended - started
                timeline.append((started, ended, words[:32]))

        setattr(asyncpg.Connection, name, timed)


def print_gaps(timeline: list[tuple[float, float, str]], started: float, ended: float) -> None:
    """How long PostgreSQL had no statement of the import in flight, by the statements around each
    gap: there the import's own Python work held it up."""
    gaps: Counter = Counter()
    times: Counter = Counter()
    busy, before = 0.0, (started, started, "(start)")
    for statement in sorted(t for t in timeline if t[0] >= started):
        if statement[0] > before[1]:
            gaps[(before[2], statement[2])] += statement[0] - before[1]
            times[(before[2], statement[2])] += 1
        busy += statement[1] - statement[0]
        before = max(before, statement, key=lambda t: t[1])
    print(f"  a statement in flight {busy:.2f} s of {ended - started:.2f} s; none in flight "
          f"{sum(gaps.values()):.2f} s, the largest gaps between:")
    for (first, then), seconds in gaps.most_common(6):
        print(f"  {seconds:6.2f} s  x{times[(first, then)]:<4d} {first}  ->  {then}")


async def run(stack: Stack, path: Path, parse: str, window: int | None) -> None:
    admin = await asyncpg.connect(stack.config.service_admin_url("catalog"))
    try:
        for table in ("offers", "offer_sessions", "outbox"):
            await admin.execute(f"VACUUM {table}")
        template = await admin.fetchval("SELECT id FROM providers ORDER BY id LIMIT 1")
    finally:
        await admin.close()
    if template is None:
        raise SystemExit("no catalog bench data: run `make bench-catalog` first")
    os.environ.update(stack.service_env("catalog"))
    conn = await asyncpg.connect(CatalogSettings().database_url)
    await init_connection(conn)
    spent: Counter = Counter()
    timeline: list[tuple[float, float, str]] = []
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, TENANTS[0])
        provider_id = await act_as_the_import_for_a_new_provider(conn, TENANTS[0], "Import-Phasen")
        acting = Acting(TENANTS[0], "operator-cli", None)
        with path.open("rb") as stream:
            records = openqcat.ParsedApart(path) if parse == "apart" else openqcat.reader(stream)
            time_statements(spent, timeline)
            cpu, backend_cpu, started = time.process_time(), cpu_seconds(backend), time.perf_counter()
            report = await importing.import_catalogue(conn, acting, provider_id, records, window=window)
            wall = time.perf_counter() - started
            cpu, backend_cpu = time.process_time() - cpu, cpu_seconds(backend) - backend_cpu
        await transaction.rollback()
    finally:
        await conn.close()
    offers = report["offers_in_file"]
    print(f"{offers} offers ({parse}, {'whole first' if window is None else 'applied while read'}): "
          f"{wall:.1f} s, {offers / wall:,.0f} offers/s; this process's CPU {cpu:.1f} s, PostgreSQL's "
          f"{backend_cpu:.1f} s; {report['counts']}")
    for statement, seconds in spent.most_common(10):
        print(f"  {seconds:6.2f} s  {statement}")
    print_gaps(timeline, started, started + wall)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=20_000)
    parser.add_argument("--parse", choices=("apart", "in-thread"), default="apart")
    parser.add_argument("--whole-first", action="store_true")
    args = parser.parse_args()
    stack = Stack(bench_config())
    stack.ensure_postgres()
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / f"openqcat-{args.offers}.xml"
        write_openqcat(path, args.offers)
        asyncio.run(run(stack, path, args.parse, None if args.whole_first else importing.WINDOW))


if __name__ == "__main__":
    main()
