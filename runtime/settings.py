"""Typed settings, read from the environment (prefix ``BR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service shares; a service subclasses it to add its own."""

    model_config = SettingsConfigDict(env_prefix="BR_", extra="ignore")

    env: Literal["dev", "test", "production"] = "dev"
    service: str = "unnamed"
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    # Which loops this process runs: "all" (HTTP, outbox relay, consumers, the service's workers),
    # "api" (HTTP only) or "events" (relay, consumers and workers; HTTP for probes and metrics).
    process: Literal["all", "api", "events"] = "all"

    # The app connects as a role that owns nothing and cannot bypass row-level security. Only the
    # migration step (`python -m services.<name> migrate`) uses one of the next two: the owner's own
    # DSN where the platform made roles and database (production), else the admin DSN, with which it
    # provisions them locally and then acts as the owner role. Service processes get neither.
    postgres_owner_url: str | None = None
    postgres_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    database_prefix: str = "bildungsraum"
    database_password: str | None = None
    # No statement of the service's pool runs longer: a search that would take minutes is stopped
    # (503 to its caller) instead of holding a connection and a core from everyone else.
    database_statement_timeout_ms: int = 30_000

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Production (Strimzi): SASL_SSL with the service's KafkaUser (SCRAM-SHA-512) and the cluster CA.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_username: str | None = None
    kafka_password: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1000
    # How long the broker may hold a fetch with nothing to read. It answers as soon as a record arrives
    # (median 3 ms from send to receipt at 10 ms and at 500 ms: tests/bench/broker_fetch.py), so a short
    # wait only buys idle round trips: 8-11 % of a core per idle consumer and 4-5 % in the broker at 10 ms,
    # under 1 % at 500 ms (Kafka's own default), for every consumer of every service.
    kafka_fetch_max_wait_ms: int = 500
    consumer_max_attempts: int = 5

    issuer_url: str = "http://127.0.0.1:8080/realms/bildungsraum"
    token_audience: str = "bildungsraum-api"
    jwks_min_refresh_seconds: float = 5.0  # at most one fetch per interval for unknown kids
    jwks_max_age_seconds: float = 600.0  # keys refetched after this, so a revoked key stops working
    token_leeway_seconds: float = 5.0  # clock skew allowed on exp/nbf/iat (capped at 60 s)
    # The realm's clients whose access tokens the services accept (`azp`); comma-separated.
    token_clients: str = ("bildungsraum-cli,bildungsraum-portal,bildungsraum-identity,"
                          "bildungsraum-catalog,bildungsraum-matching,bildungsraum-notifications")

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Per client, shared by all processes of a service through Redis (`limits` notation).
    rate_limit_writes: str = "300/minute"
    rate_limit_anonymous_writes: str = "60/minute"
    outbox_sweep_seconds: float = 2.0
    outbox_retention_hours: float = 24.0
    # As long as an event can come back: the longest a topic or its dead-letter twin keeps it (30
    # days, deploy/k8s/platform/kafka/topics.yaml; a replay publishes a dead letter again), and a day.
    # Past that no redelivery or replay brings it back, so its inbox row can go (tests/deploy checks).
    inbox_retention_hours: float = 744.0
    log_level: str = "INFO"

    @property
    def database_name(self) -> str:
        return f"{self.database_prefix}_{self.service}"

    @property
    def owner_role(self) -> str:
        return f"br_{self.service}_owner"

    @property
    def app_role(self) -> str:
        return f"br_{self.service}_app"

    @property
    def database_url(self) -> str:
        auth = self.app_role if not self.database_password else f"{self.app_role}:{self.database_password}"
        return f"postgresql://{auth}@{self.postgres_host}:{self.postgres_port}/{self.database_name}"

    @property
    def admin_database_url(self) -> str:
        """The admin DSN pointed at this service's database."""
        base, _, _ = self.postgres_admin_url.rpartition("/")
        return f"{base}/{self.database_name}"
