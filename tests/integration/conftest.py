from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from runtime.db import create_pool, migrate
from runtime.settings import ServiceSettings
from services.catalog import handlers as catalog_handlers
from services.catalog.bootstrap import CatalogSettings
from services.matching import handlers
from services.matching.bootstrap import MatchingSettings
from services.matching.index import reset_index
from services.matching.kept_demands import reset_demand_vectors

MATCHING_MIGRATIONS = Path(handlers.__file__).parent / "migrations"
CATALOG_MIGRATIONS = Path(catalog_handlers.__file__).parent / "migrations"


@asynccontextmanager
async def _own_database(settings: ServiceSettings, migrations: Path,
                        extensions: tuple[str, ...] = ()) -> AsyncIterator[asyncpg.Pool]:
    """A service database of the test's own, migrated, and dropped after."""
    await migrate(settings, migrations, extensions)
    pool = await create_pool(settings)
    try:
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(settings.postgres_admin_url)
        await admin.execute(f'DROP DATABASE "{settings.database_name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def matching_pool():
    """A matching database of the test's own (migrated, one network known), for calling the handlers
    in-process; the process's offer index and kept demand vectors start empty and are forgotten after."""
    settings = MatchingSettings(database_prefix=f"bildungsraum_m{uuid.uuid4().hex[:8]}")
    async with _own_database(settings, MATCHING_MIGRATIONS) as pool:
        await pool.execute("INSERT INTO known_tenants (id, name) VALUES ('lueneburg', 'Lüneburg')")
        reset_index()
        reset_demand_vectors()
        yield pool
    reset_index()
    reset_demand_vectors()


@pytest.fixture
async def catalog_pool():
    """A catalog database of the test's own (migrated), for calling the handlers in-process."""
    settings = CatalogSettings(database_prefix=f"bildungsraum_c{uuid.uuid4().hex[:8]}")
    async with _own_database(settings, CATALOG_MIGRATIONS, ("cube", "earthdistance")) as pool:
        yield pool
