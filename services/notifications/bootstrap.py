"""Wires the notifications service: settings, runtime (consumers, outbox relay), the delivery
dispatcher and the app. The Celery worker is a process of its own (``worker.py``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from redis.asyncio import Redis

from contracts import DEMANDS_TOPIC, MATCHES_TOPIC, PROVIDERS_TOPIC, TENANTS_TOPIC
from runtime.http import create_app as create_http_app
from runtime.service import ConsumerSpec, ServiceRuntime
from services.notifications import api
from services.notifications.consumers import GROUP, create_handlers
from services.notifications.dispatcher import DeliveryDispatcher, celery_enqueue
from services.notifications.settings import NotificationsSettings
from services.notifications.worker import create_celery

MIGRATIONS = Path(__file__).parent / "migrations"

__all__ = ["MIGRATIONS", "NotificationsSettings", "create_app", "create_runtime"]


def create_runtime(settings: NotificationsSettings, dispatcher: DeliveryDispatcher) -> ServiceRuntime:
    return ServiceRuntime(
        settings,
        MIGRATIONS,
        consumer_specs=[ConsumerSpec(group=GROUP, topics=[MATCHES_TOPIC, DEMANDS_TOPIC, PROVIDERS_TOPIC, TENANTS_TOPIC],
                                     handlers=create_handlers(settings))],
        workers=[dispatcher],
        readiness_checks={"redis": lambda: redis_ready(settings.redis_url)},
    )


async def redis_ready(url: str) -> str:
    """The dispatcher hands deliveries to Celery through Redis."""
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        return "ok" if await client.ping() else "error: no PONG"
    finally:
        await client.aclose()


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()
    settings.signing_secret()  # refuse to start without the secret that signs unsubscribe links
    dispatcher = DeliveryDispatcher(settings, celery_enqueue(create_celery(settings), settings))
    app = create_http_app(create_runtime(settings, dispatcher), "Bildungsraum notifications", [api.router],
                          "E-mail notifications: preferences, delivery log, one-click unsubscribe.")
    app.state.dispatcher = dispatcher
    return app
