"""Operators' command line for the catalog.

    python -m services.catalog.cli import-openqcat --tenant T --provider-id P FILE.xml

Imports as an operator would (for the named provider of the named network), with the service's
own settings (``BR_*`` environment), and shows progress: records read, then offers applied of the
file's total. The report is printed as JSON at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

from runtime.db import create_pool, tenant_transaction
from services.catalog import importing, openqcat, store
from services.catalog.bootstrap import CatalogSettings
from services.catalog.domain import Acting


def _progress(out) -> importing.Progress:
    started = time.monotonic()

    def show(phase: str, done: int, total: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        of = f" of {total}" if total else ""
        out.write(f"\r{'read' if phase == 'read' else 'applied'} {done}{of} records ({rate:,.0f}/s)   ")
        out.flush()

    return show


async def import_openqcat(settings: CatalogSettings, tenant: str, provider_id: uuid.UUID, path: Path, *,
                          status: str = "published", scope: str = "home", progress: importing.Progress | None = None,
                          ) -> dict:
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        async with tenant_transaction(pool, tenant) as conn:
            acting = Acting(tenant, "operator-cli", None)
            await store.set_acting(conn, acting)
            with path.open("rb") as stream:
                return await importing.import_catalogue(
                    conn, acting, provider_id, openqcat.read(stream), status=status,
                    visibility={"scope": scope, "networks": []}, progress=progress)
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
                                             status=args.status, scope=args.scope,
                                             progress=_progress(sys.stderr)))
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
