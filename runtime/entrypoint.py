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
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from runtime.db import MigrationError, migrate
from runtime.logs import configure_logging
from runtime.settings import ServiceSettings

PROCESSES = ("all", "api", "events")
# How long an idle keep-alive connection stays open: longer than any client keeps one pooled (httpx 5 s,
# the portal's backend calls among them; load balancers up to 60 s). With uvicorn's own 5 s, a client
# reusing a connection at the moment the server closes it gets "Server disconnected without sending a
# response" (encode/httpx#2487).
KEEP_ALIVE_SECONDS = 75
# A request's line and headers: far above any real request (a search's query string is under 2 KiB,
# a token under 4 KiB), the bound most servers and proxies set.
MAX_HEAD_BYTES = 64 * 1024


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a bound on what a request sends besides its body (its line,
    headers, chunk sizes and trailers): llhttp sets none, and uvicorn (the URL) and httptools (a
    header or trailer) join what arrives piece by piece, so one request of a 64 MiB URL held the
    event loop for 6 s (the work grows with the square of the length), and as many headers filled
    the memory, before any route's guard saw them. Past the bound: 431, and the connection closed.
    Counted as what arrives less the body handed on, reset when a request is complete (so a read
    that ends one request and begins the next may carry one read's worth, 256 KiB, uncounted)."""

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def, override]
        super().connection_made(transport)
        self._framing = 0

    def on_body(self, body: bytes) -> None:
        self._framing -= len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._framing = 0

    def data_received(self, data: bytes) -> None:
        self._framing += len(data)
        super().data_received(data)
        if self._framing > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._framing = 0
            message = b"The request line and headers are too large."
            self.transport.write(STATUS_LINE[431] + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
                                 + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message)
            self.transport.close()


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service, settings.log_level)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, http=BoundedHeadProtocol,
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
