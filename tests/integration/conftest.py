from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from runtime.db import create_pool, migrate
from services.matching import handlers
from services.matching.bootstrap import MatchingSettings
from services.matching.index import reset_index
from services.matching.kept_demands import reset_demand_vectors

MATCHING_MIGRATIONS = Path(handlers.__file__).parent / "migrations"


@pytest.fixture
async def matching_pool():
    """A matching database of the test's own (migrated, one network known), for calling the handlers
    in-process; the process's offer index and kept demand vectors start empty and are forgotten after."""
    settings = MatchingSettings(database_prefix=f"bildungsraum_m{uuid.uuid4().hex[:8]}")
    await migrate(settings, MATCHING_MIGRATIONS)
    pool = await create_pool(settings)
    await pool.execute("INSERT INTO known_tenants (id, name) VALUES ('lueneburg', 'Lüneburg')")
    reset_index()
    reset_demand_vectors()
    yield pool
    await pool.close()
    reset_index()
    reset_demand_vectors()
    admin = await asyncpg.connect(settings.postgres_admin_url)
    await admin.execute(f'DROP DATABASE "{settings.database_name}" WITH (FORCE)')
    await admin.close()
