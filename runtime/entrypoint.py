"""Running a service process: JSON logs, then uvicorn serving the app (whose lifespan migrates
the database and starts the relay and consumers)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from runtime.logs import configure_logging
from runtime.settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service, settings.log_level)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False, timeout_graceful_shutdown=5)
