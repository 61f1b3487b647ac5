"""Running a service: ``python -m services.<name> [all|api|events|migrate]``.

``all`` (the default) serves HTTP and runs the outbox relay, the consumers and the service's own
loops in one process, as the local stack does; ``api`` serves HTTP only and ``events`` runs the
loops (with HTTP for probes and metrics), as the Kubernetes Deployments split them; ``migrate``
applies the service's migrations with the owner's rights and exits, before any of the others start.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from runtime.db import MigrationError, migrate
from runtime.logs import configure_logging
from runtime.settings import ServiceSettings

PROCESSES = ("all", "api", "events")
# How long an idle keep-alive connection stays open: longer than any client keeps one pooled (httpx 5 s,
# the portal's backend calls among them; load balancers up to 60 s). With uvicorn's own 5 s, a client
# reusing a connection at the moment the server closes it gets "Server disconnected without sending a
# response" (encode/httpx#2487).
KEEP_ALIVE_SECONDS = 75


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service, settings.log_level)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False, timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_SECONDS)


def main(settings_type: type[ServiceSettings], create_app: Callable[[ServiceSettings], FastAPI],
         argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{settings_type().service}")
    parser.add_argument("process", nargs="?", default="all", choices=[*PROCESSES, "migrate"])
    process = parser.parse_args(argv).process
    if process == "migrate":
        settings = settings_type()
        configure_logging(f"{settings.service}-migrate", settings.log_level)
        runtime = create_app(settings).state.runtime
        try:
            applied = asyncio.run(migrate(settings, runtime.migrations_dir, runtime.extensions))
        except MigrationError as exc:
            print(f"migration refused: {exc}", file=sys.stderr)
            return 2
        print(f"{settings.database_name}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
        return 0
    settings = settings_type(process=process)
    serve(create_app(settings), settings)
    return 0
