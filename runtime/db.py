"""PostgreSQL access: the pool, tenant-scoped transactions (row-level security) and migrations."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from runtime.settings import ServiceSettings

# Failures of the ground under a handler, not of its work: a consumer retries them with backoff
# without limit, never dead-letters them; a request gets a 503 to try again (runtime.http).
# Deadlocks and serialization failures are PostgreSQL telling us to try again.
TRANSIENT_DATABASE_ERRORS = (
    asyncpg.TransactionRollbackError,  # deadlock_detected, serialization_failure
    asyncpg.LockNotAvailableError,
    asyncpg.PostgresConnectionError,  # includes a connection lost mid-transaction
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

log = logging.getLogger(__name__)

# Every tenant-owned table's policy reads this setting; it is set per transaction (SET LOCAL).
TENANT_SETTING = "app.tenant_id"


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    # orjson: a JSON value to or from the database in a fifth of the standard library's time (an
    # import's batch, an offer's read-back and every event payload go through here)
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=_json_text, decoder=orjson.loads, schema="pg_catalog")


async def given_back(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection given back, beyond asyncpg's own rollback of a transaction
    left open: nothing. A pooled connection holds no state beyond its transaction: the tenant and
    other settings are set for the transaction only (set_config(..., true), SET LOCAL), locks are
    transaction locks, and what outlives a transaction (the relay's advisory lock, LISTEN) has a
    connection of its own (runtime/loops.py). asyncpg's default reset (RESET ALL, UNLISTEN *, CLOSE
    ALL, pg_advisory_unlock_all) was one more round trip per use: 0.28 of the 0.56 ms of the
    client's CPU a tenant transaction around one statement took (a diagnosis, 2026-12-07).
    tests/integration/test_row_level_security.py holds the tenant to that."""


async def create_pool(settings: ServiceSettings, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url, min_size=min_size, max_size=max_size, init=init_connection, reset=given_back,
        server_settings={"statement_timeout": str(settings.database_statement_timeout_ms)},
    )


@asynccontextmanager
async def tenant_transaction(pool: asyncpg.Pool, tenant_id: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that row-level security confines to one tenant's rows."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, tenant_id)
        yield conn


@asynccontextmanager
async def system_transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A transaction with no acting tenant: tenant-owned tables show it nothing."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn


async def set_tenant(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Switch the acting tenant inside the current transaction (consumers fanning out over tenants)."""
    await conn.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, tenant_id)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def provision_database(settings: ServiceSettings, extensions: tuple[str, ...] = ()) -> None:
    """Create the service's roles, database and extensions if missing (idempotent; needs the admin
    DSN: some extensions, earthdistance among them, only a superuser may create)."""
    owner, app, dbname = settings.owner_role, settings.app_role, settings.database_name
    conn = await asyncpg.connect(settings.postgres_admin_url)
    try:
        # Roles are cluster-wide: serialise concurrent service starts.
        await conn.execute("SELECT pg_advisory_lock(hashtext('bildungsraum-provision'))")
        for role, login in ((owner, False), (app, True)):
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await conn.execute(
                    f"CREATE ROLE {_quote_ident(role)} {'LOGIN' if login else 'NOLOGIN'} "
                    "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
                )
        if settings.database_password:
            await conn.execute(
                f"ALTER ROLE {_quote_ident(app)} PASSWORD {_literal(settings.database_password)}"
            )
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            await conn.execute(f"CREATE DATABASE {_quote_ident(dbname)} OWNER {_quote_ident(owner)}")
        await conn.execute(f"GRANT CONNECT ON DATABASE {_quote_ident(dbname)} TO {_quote_ident(app)}")
        await conn.execute("SELECT pg_advisory_unlock(hashtext('bildungsraum-provision'))")
    finally:
        await conn.close()
    if extensions:
        conn = await asyncpg.connect(settings.admin_database_url)
        try:
            for extension in extensions:
                await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {_quote_ident(extension)} CASCADE")
        finally:
            await conn.close()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


RUNTIME_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# One migration run per database at a time; advisory locks are scoped to the database.
MIGRATE_LOCK = "bildungsraum-migrate"


class MigrationError(RuntimeError):
    """The database's migrations cannot be brought up to date without a person deciding."""


def migration_files(service: str, migrations_dir: Path) -> list[tuple[str, Path]]:
    """``(version, file)`` in the order they apply: the runtime's, then the service's."""
    files = [("runtime", p) for p in sorted(RUNTIME_MIGRATIONS.glob("*.sql"))]
    files += [(service, p) for p in sorted(migrations_dir.glob("*.sql"))]
    return [(f"{prefix}/{path.stem}", path) for prefix, path in files]


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def migrate(settings: ServiceSettings, migrations_dir: Path, extensions: tuple[str, ...] = ()) -> list[str]:
    """Apply the runtime's and then the service's numbered ``*.sql`` files not yet applied,
    in order, each in its own transaction; answer the versions applied.

    Runs as the owner role: with ``BR_POSTGRES_OWNER_URL`` it connects as that role to a database
    the platform made (CloudNativePG in production); otherwise it provisions roles and database
    with the admin DSN and then acts as the owner (``SET ROLE``). Objects belong to the owner; the
    app role gets data rights only, so row-level security (enabled and forced in each migration)
    binds it. Each applied file's SHA-256 is recorded; a file changed after it was applied is
    refused before anything runs. Concurrent runs wait for each other (advisory lock).
    """
    files = migration_files(settings.service, migrations_dir)
    if settings.postgres_owner_url:
        conn = await asyncpg.connect(settings.postgres_owner_url)
    else:
        await provision_database(settings, extensions)
        conn = await asyncpg.connect(settings.admin_database_url)
    owner, app = _quote_ident(settings.owner_role), _quote_ident(settings.app_role)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", MIGRATE_LOCK)
        if settings.postgres_owner_url:
            for extension in extensions:  # made by the platform already; a no-op then
                await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {_quote_ident(extension)} CASCADE")
        else:
            await conn.execute(f"SET ROLE {owner}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {app}")
        await conn.execute(f"GRANT SELECT ON schema_migrations TO {app}")  # readiness compares versions
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}"
        )
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app}"
        )
        recorded = {r["version"]: r["checksum"]
                    for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
        changed = [(v, recorded[v], checksum(p)) for v, p in files
                   if recorded.get(v) is not None and recorded[v] != checksum(p)]
        if changed:
            raise MigrationError(
                f"database {settings.database_name}: applied migrations were edited afterwards: "
                + "; ".join(f"{v} (applied with sha256 {old[:12]}, file now {new[:12]})" for v, old, new in changed)
                + ". An applied migration is never changed: restore the file and add a new numbered migration."
            )
        for version, path in files:
            digest = checksum(path)
            if version in recorded:
                if recorded[version] is None:  # applied before checksums were kept: record it now
                    await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                                       version, digest)
                continue
            async with conn.transaction():
                await conn.execute(path.read_text(encoding="utf-8"))
                await conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                                   version, digest)
            applied.append(version)
            log.info("migration applied", extra={"migration": version})
    finally:
        await conn.close()  # ends the session: role and advisory lock go with it
    return applied


async def pending_migrations(conn: asyncpg.Connection, service: str, migrations_dir: Path) -> list[str]:
    """The versions this code expects that the database has not applied (or applied in another form)."""
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        rows = []
    recorded = {r["version"]: r["checksum"] for r in rows}
    return [v for v, p in migration_files(service, migrations_dir)
            if v not in recorded or recorded[v] not in (None, checksum(p))]
