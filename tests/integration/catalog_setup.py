"""Setting up a catalog database in-process, as the operators' import does."""

from __future__ import annotations

import uuid

import asyncpg

from services.catalog import store
from services.catalog.domain import Acting, ProviderIn


async def act_as_the_import_for_a_new_provider(conn: asyncpg.Connection, tenant: str,
                                               name: str = "Träger") -> uuid.UUID:
    """Act as the operators' command-line import does and add a provider of the network's own."""
    await store.set_acting(conn, Acting(tenant, "operator-cli", None))
    return await store.insert_provider(conn, tenant, ProviderIn(name=name, emails=["kurse@traeger.example"]))
