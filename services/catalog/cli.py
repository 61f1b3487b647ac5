"""Operators' command line for the catalog.

    python -m services.catalog.cli import-openqcat --tenant T --provider-id P FILE.xml

Imports as an operator would (for the named provider of the named network), with the service's
own settings (``BR_*`` environment), and shows its progress on standard error: how much of the file
is read and how many offers are applied (of the file's total, once it is read whole). The report is
printed as JSON at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import IO

from runtime.db import create_pool, tenant_transaction
from runtime.tracing import continue_trace
from services.catalog import importing, openqcat, store
from services.catalog.bootstrap import CatalogSettings
from services.catalog.domain import Acting


def _progress(out, records: openqcat.ParsedApart, size: int) -> importing.Progress:
    """One line, rewritten: how much of the file is read, and how many offers are applied of those
    in the file (their number is known once it is read whole)."""
    started, seen = time.monotonic(), {"read": 0, "apply": 0}

    def show(phase: str, done: int, total: int) -> None:
        seen[phase] = done
        elapsed = max(time.monotonic() - started, 1e-6)
        read = f"read {seen['read']:,} records ({min(records.position / max(size, 1), 1):.0%} of the file)"
        applied = f"applied {seen['apply']:,}{f' of {total:,}' if total else ''} offers"
        out.write(f"\r{read}, {applied} ({seen['apply'] / elapsed:,.0f} offers/s)   ")
        out.flush()

    return show


async def import_openqcat(settings: CatalogSettings, tenant: str, provider_id: uuid.UUID, path: Path, *,
                          status: str = "published", scope: str = "home", out: IO[str] | None = None) -> dict:
    """Import a file as the operator: progress written to ``out`` while it runs."""
    size = path.stat().st_size  # (a missing file is told before anything starts)
    # One trace for the whole import, as an import through the API has its request's: each event
    # and log line of it carries the same trace id (and no event pays for a trace id of its own).
    continue_trace(None)
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            acting = Acting(tenant, "operator-cli", None)
            await store.set_acting(conn, acting)
            records = openqcat.ParsedApart(path)
            return await importing.import_catalogue(
                conn, acting, provider_id, records, status=status, visibility={"scope": scope, "networks": []},
                progress=_progress(out, records, size) if out else None)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.catalog.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("import-openqcat", help="import a provider's open-Qcat 1.1 catalogue")
    command.add_argument("file", type=Path)
    command.add_argument("--tenant", required=True)
    command.add_argument("--provider-id", required=True, type=uuid.UUID)
    command.add_argument("--status", choices=("published", "draft"), default="published")
    command.add_argument("--scope", choices=("home", "all"), default="home")
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(import_openqcat(CatalogSettings(), args.tenant, args.provider_id, args.file,
                                             status=args.status, scope=args.scope, out=sys.stderr))
    except (openqcat.UnreadableFile, FileNotFoundError) as exc:
        print(f"\nimport refused: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # NotFound and friends: say it plainly, no traceback for an operator
        print(f"\nimport failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
