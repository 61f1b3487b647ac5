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
    """uvicorn's HTTP/1.1 protocol with a bound on a request's head: llhttp sets none, and uvicorn (the
    URL) and httptools (a header) join what arrives piece by piece, so one request of a 64 MiB URL held
    the event loop for 6 s (the work grows with the square of the length), and as many headers filled
    the memory, before any route's guard saw them. Past the bound: 431, and the connection is closed.
    What arrives before the head is complete is counted; a body arriving with the head is not refused."""

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def, override]
        super().connection_made(transport)
        self._head_bytes, self._in_head = 0, True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes, self._in_head = 0, True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes - len(data) > MAX_HEAD_BYTES:  # fed the bound and more, and still no end
                self._refuse_head()
                return
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse_head()

    def _refuse_head(self) -> None:
        self._in_head = False  # nothing more is read from this connection
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
