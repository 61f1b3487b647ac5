"""Migrations are a step of their own: recorded with a checksum, an edited one refused, concurrent
runs serialised, and the service processes never given the owner's or admin's credentials."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from deploy.local.stack import ROOT, stack_slot
from runtime.db import MigrationError, migrate
from runtime.settings import ServiceSettings

PREFIX = f"bildungsraum_test{stack_slot() or ''}_migrations"


def _settings(service: str) -> ServiceSettings:
    return ServiceSettings(env="test", service=service, database_prefix=PREFIX)


async def _drop(settings: ServiceSettings) -> None:
    conn = await asyncpg.connect(settings.postgres_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{settings.database_name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def fresh():
    made: list[ServiceSettings] = []

    async def make(service: str) -> ServiceSettings:
        settings = _settings(service)
        await _drop(settings)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        await _drop(settings)


async def test_an_applied_migration_edited_afterwards_is_refused(fresh, tmp_path: Path) -> None:
    settings = await fresh("migcheck")
    (tmp_path / "0001_courses.sql").write_text("CREATE TABLE courses (id int PRIMARY KEY);\n")
    first = await migrate(settings, tmp_path)
    assert first[0] == "runtime/0001_outbox_inbox" and first[-1] == "migcheck/0001_courses"
    assert await migrate(settings, tmp_path) == []  # a second run applies nothing

    # someone edits the applied file and adds a new one behind it
    (tmp_path / "0001_courses.sql").write_text("CREATE TABLE courses (id int PRIMARY KEY, title text);\n")
    (tmp_path / "0002_rooms.sql").write_text("CREATE TABLE rooms (id int PRIMARY KEY);\n")
    with pytest.raises(MigrationError) as refused:
        await migrate(settings, tmp_path)
    message = str(refused.value)
    assert "migcheck/0001_courses" in message and "add a new numbered migration" in message

    conn = await asyncpg.connect(settings.admin_database_url)
    try:  # nothing ran: neither the edit nor the migration after it
        assert await conn.fetchval("SELECT to_regclass('rooms')") is None
        columns = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'courses'")
        assert [r["column_name"] for r in columns] == ["id"]
        recorded = await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = 'migcheck/0001_courses'")
        assert len(recorded) == 64
    finally:
        await conn.close()


async def test_concurrent_migration_runs_apply_each_file_once(fresh, tmp_path: Path) -> None:
    settings = await fresh("migrace")
    # slow and not repeatable: a second application would fail on the existing table
    (tmp_path / "0001_slow.sql").write_text(
        "SELECT pg_sleep(0.5); CREATE TABLE applied (n int); INSERT INTO applied VALUES (1);\n")
    (tmp_path / "0002_more.sql").write_text("INSERT INTO applied VALUES (2);\n")
    results = await asyncio.gather(*(migrate(settings, tmp_path) for _ in range(4)))
    applied = [version for result in results for version in result]
    assert sorted(applied) == sorted(set(applied))  # no version applied twice
    assert {"migrace/0001_slow", "migrace/0002_more"} <= set(applied)
    conn = await asyncpg.connect(settings.admin_database_url)
    try:
        assert [r["n"] for r in await conn.fetch("SELECT n FROM applied ORDER BY n")] == [1, 2]
    finally:
        await conn.close()


def _run_migrate(service: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"services.{service}", "migrate"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_migrate_command_applies_then_refuses_a_changed_history(fresh) -> None:
    settings = await fresh("identity")
    env = {**os.environ, "BR_ENV": "test", "BR_DATABASE_PREFIX": PREFIX,
           "BR_POSTGRES_ADMIN_URL": settings.postgres_admin_url}
    first = _run_migrate("identity", env)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout and "identity/0001_tenants" in first.stdout
    again = _run_migrate("identity", env)
    assert again.returncode == 0 and "up to date" in again.stdout

    conn = await asyncpg.connect(settings.admin_database_url)
    try:  # the database remembers another text of the file than the one shipped now
        await conn.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) "
                           "WHERE version = 'identity/0001_tenants'")
    finally:
        await conn.close()
    refused = _run_migrate("identity", env)
    assert refused.returncode == 2
    assert "migration refused" in refused.stderr and "identity/0001_tenants" in refused.stderr


def test_service_processes_hold_no_admin_or_owner_credentials(stack) -> None:
    for name in ("identity", "catalog", "matching", "notifications", "celery-worker"):
        environ = Path(f"/proc/{stack.processes[name].pid}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
        assert "BR_DATABASE_PREFIX" in names  # it is the service's environment ...
        assert not names & {"BR_POSTGRES_ADMIN_URL", "BR_POSTGRES_OWNER_URL"}  # ... without the owner's keys


async def test_with_the_owners_own_dsn_migrations_run_as_the_owner_and_the_app_role_may_use_them(
        fresh, tmp_path: Path) -> None:
    # Production: the platform (CloudNativePG) made roles and database; the Job logs in as the owner.
    settings = await fresh("migowner")
    await migrate(settings, tmp_path)  # here the admin makes roles and database, as the platform would
    admin = await asyncpg.connect(settings.postgres_admin_url)
    try:
        await admin.execute(f"ALTER ROLE {settings.owner_role} LOGIN")
    finally:
        await admin.close()
    (tmp_path / "0001_rooms.sql").write_text(
        "CREATE TABLE rooms (id int PRIMARY KEY); INSERT INTO rooms VALUES (1);\n")
    base = settings.postgres_admin_url.rpartition("@")[2].rpartition("/")[0]
    as_owner = settings.model_copy(update={
        "postgres_owner_url": f"postgresql://{settings.owner_role}@{base}/{settings.database_name}",
        "postgres_admin_url": "postgresql://nobody@127.0.0.1:1/none"})  # proves the admin DSN is not used
    assert await migrate(as_owner, tmp_path) == ["migowner/0001_rooms"]

    conn = await asyncpg.connect(settings.admin_database_url)
    try:
        assert await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'rooms'") == settings.owner_role
    finally:
        await conn.close()
    app = await asyncpg.connect(settings.database_url)
    try:
        assert await app.fetchval("SELECT count(*) FROM rooms") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("DROP TABLE rooms")
    finally:
        await app.close()
