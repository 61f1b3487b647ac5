"""A query that forgets its tenant filter still sees only the acting tenant's private rows: row-level
security holds every service's tables, as the services' own database role (which owns nothing and
cannot bypass RLS), whatever the SQL says."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import numpy as np
import pytest

from runtime import db
from services.catalog.bootstrap import CatalogSettings
from tests.platform import Platform, alone_at, demand_body, lonely_place, offer_body, wait_until

A, B = "lueneburg", "hellweg-hochsauerland"
# service → queries without any tenant filter over its private rows
FORGETFUL = {
    "catalog": ["SELECT tenant_id FROM providers",
                "SELECT tenant_id FROM offers WHERE visibility_scope = 'home'"],
    "matching": ["SELECT tenant_id FROM demands",
                 "SELECT tenant_id FROM offers WHERE visibility_scope = 'home'",
                 "SELECT tenant_id FROM offer_sessions WHERE visibility_scope = 'home'",
                 # the offer index's view (its functions read every network's rows as the owner)
                 "SELECT tenant AS tenant_id FROM offer_index_offers WHERE scope = 'home'"],
    "identity": ["SELECT tenant_id FROM audit_log"],
    "notifications": ["SELECT tenant_id FROM preferences"],
}


@pytest.fixture(scope="module")
def private_rows_in_both_networks(platform: Platform) -> None:
    """Each network has private rows in every service's tables (at a place of their own: the portal's
    journeys look for their offers around Lüneburg)."""
    offer_at, demand_at = alone_at(lonely_place())
    for tenant in (A, B):
        with platform.client("catalog", f"{tenant}-provider") as api:
            provider = api.post("/v1/providers", json={"name": "RLS-Akademie", "emails": ["rls@akademie.example"]})
            assert provider.status_code == 201, provider.text
            body = offer_body(provider.json()["id"], visibility={"scope": "home"}, **offer_at)
            offer = api.post("/v1/offers", json=body)
            assert offer.status_code == 201, offer.text
        with platform.client("matching", f"{tenant}-employer") as api:
            demand = api.post("/v1/demands", json=demand_body(**demand_at))
            assert demand.status_code == 201, demand.text
            # matching learns of the offer from the catalog's event, a moment later
            wait_until("matching to know the offer", lambda api=api, d=demand.json()["id"], o=offer.json()["id"]: o in {
                i["offer_id"] for i in api.get(f"/v1/demands/{d}/offers").json()["items"]})
        with platform.client("identity", f"{tenant}-admin") as api:
            invited = api.post("/v1/members", json={"email": f"rls@{tenant}.example", "role": "counselor"})
            assert invited.status_code == 201, invited.text
        with platform.client("notifications", "operator", **{"X-Tenant": tenant}) as api:
            wait_until("notifications to know the provider", lambda pid=provider.json()["id"], api=api: api.put(
                f"/v1/preferences/{pid}", json={"mode": "instant"}).status_code == 200)


async def _app_connection(platform: Platform, service: str) -> asyncpg.Connection:
    c = platform.config
    return await asyncpg.connect(host=c.host, port=c.ports["postgres"], user=f"br_{service}_app",
                                 database=f"{c.database_prefix}_{service}")


@pytest.mark.parametrize("service", sorted(FORGETFUL))
async def test_a_query_without_a_tenant_filter_sees_only_the_acting_tenant(
        platform: Platform, private_rows_in_both_networks: None, service: str) -> None:
    conn = await _app_connection(platform, service)
    try:
        assert await conn.fetchval("SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user") \
            is False
        for sql in FORGETFUL[service]:
            for acting in (A, B):
                async with conn.transaction():
                    await conn.execute("SELECT set_config('app.tenant_id', $1, true)", acting)
                    tenants = {r["tenant_id"] for r in await conn.fetch(sql)}
                assert tenants == {acting}, (sql, acting, tenants)
            # No acting tenant: nothing at all.
            async with conn.transaction():
                assert await conn.fetch(sql) == [], sql
        # Turning RLS off is refused to this role, not silently ignored.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("SET LOCAL row_security = off")
                await conn.fetch(FORGETFUL[service][0])
    finally:
        await conn.close()


async def test_a_pooled_connection_given_back_carries_no_tenant_to_its_next_user(
        platform: Platform, private_rows_in_both_networks: None) -> None:
    """The services' pool gives a connection back without asyncpg's reset query (runtime/db.py):
    what one request set for its tenant must end with its transaction, whether it committed, raised,
    or was left open, so the next request on the same connection sees no network's private rows."""
    c = platform.config
    settings = CatalogSettings(postgres_host=c.host, postgres_port=c.ports["postgres"],
                               database_prefix=c.database_prefix)
    private = "SELECT count(*) FROM offers WHERE visibility_scope = 'home'"
    pool = await db.create_pool(settings, min_size=1, max_size=1)

    async def next_user_sees() -> tuple[int, str | None, bool, int]:
        async with pool.acquire() as conn:
            return (await conn.fetchval("SELECT pg_backend_pid()"),
                    await conn.fetchval("SELECT nullif(current_setting('app.tenant_id', true), '')"),
                    conn.is_in_transaction(), await conn.fetchval(private))

    try:
        async with db.tenant_transaction(pool, A) as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            assert await conn.fetchval(private) > 0  # the acting network's own rows
        assert await next_user_sees() == (backend, None, False, 0)

        with pytest.raises(RuntimeError):
            async with db.tenant_transaction(pool, A) as conn:
                assert await conn.fetchval(private) > 0
                raise RuntimeError("the request failed half way")
        assert await next_user_sees() == (backend, None, False, 0)

        async with pool.acquire() as conn:  # a transaction its user never ended
            await conn.execute("BEGIN")
            await db.set_tenant(conn, A)
            assert await conn.fetchval(private) > 0
        assert await next_user_sees() == (backend, None, False, 0)
    finally:
        await pool.close()


async def test_a_provider_user_sees_only_its_own_providers_attempt_log(platform: Platform) -> None:
    """The attempt log follows its delivery's owner: a provider user's query that forgets the
    ownership check still sees only the attempts of deliveries to providers it acts for; the worker
    and consumers (no provider acting) see the tenant's whole log."""
    c = platform.config
    admin = await asyncpg.connect(c.service_admin_url("notifications"))
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    deliveries = {provider: uuid.uuid4() for provider in (mine, theirs)}
    try:
        for provider, delivery in deliveries.items():
            await admin.execute(
                "INSERT INTO deliveries (id, tenant_id, kind, idempotency_key, provider_id, owner_id, recipient,"
                " payload, message_id) VALUES ($1, $2, 'match_found', $3, $4, $5, 'a@b.example', '{}', $3)",
                delivery, A, f"rls-{delivery}", provider, str(provider))
            await admin.execute("INSERT INTO delivery_attempts (delivery_id, tenant_id, attempt, outcome)"
                                " VALUES ($1, $2, 1, 'sent')", delivery, A)
        conn = await _app_connection(platform, "notifications")
        try:
            async def attempts(acting: str | None) -> set:
                async with conn.transaction():
                    await conn.execute("SELECT set_config('app.tenant_id', $1, true)", A)
                    if acting is not None:
                        await conn.execute("SELECT set_config('app.acting_providers', $1, true)", acting)
                    rows = await conn.fetch("SELECT delivery_id FROM delivery_attempts WHERE delivery_id = ANY($1)",
                                            list(deliveries.values()))
                    updated = await conn.execute("UPDATE delivery_attempts SET error = 'x' WHERE delivery_id = $1",
                                                 deliveries[theirs])
                    assert updated == ("UPDATE 1" if acting is None else "UPDATE 0")
                    return {r["delivery_id"] for r in rows}

            assert await attempts(f"providers:{mine}") == {deliveries[mine]}
            assert await attempts(f"providers:{uuid.uuid4()},{mine}") == {deliveries[mine]}
            assert await attempts(None) == set(deliveries.values())
        finally:
            await conn.close()
    finally:
        await admin.execute("DELETE FROM delivery_attempts WHERE delivery_id = ANY($1)", list(deliveries.values()))
        await admin.execute("DELETE FROM deliveries WHERE id = ANY($1)", list(deliveries.values()))
        await admin.close()


# Tables with a tenant_id that are deliberately not under row-level security, and why.
NOT_ISOLATED = {
    "outbox": "the transport: the relay publishes every network's rows; no request reads it",
    "tenant_branding": "each network's public name, logo and imprint (notifications' copy for mails)",
}


@pytest.mark.parametrize("service", sorted(FORGETFUL))
async def test_every_table_with_tenant_rows_is_under_row_level_security(platform: Platform, service: str) -> None:
    """A table added later cannot forget it: every table of a service with a ``tenant_id`` column has
    row-level security enabled (binding the service's role, which owns no table), unless it is named
    in NOT_ISOLATED with its reason."""
    conn = await _app_connection(platform, service)
    try:
        unguarded = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity"
            " AND pg_get_userbyid(c.relowner) <> current_user ORDER BY 1")
    finally:
        await conn.close()
    assert [r["relname"] for r in unguarded if r["relname"] not in NOT_ISOLATED] == []


@pytest.mark.parametrize("service", sorted(FORGETFUL))
async def test_every_view_the_service_may_read_is_bound_by_the_policies_of_its_tables(
        platform: Platform, service: str) -> None:
    """A view reads its tables with its owner's rights unless it is ``security_invoker``, and the owner
    may see every network's rows (matching's offer index reads them so): a view the service's role
    can select from must be bound by the policies as the role itself is."""
    conn = await _app_connection(platform, service)
    try:
        unbound = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') AND has_table_privilege(c.oid, 'SELECT')"
            " AND NOT coalesce('security_invoker=true' = ANY(c.reloptions), false) ORDER BY 1")
    finally:
        await conn.close()
    assert [r["relname"] for r in unbound] == []


async def test_matching_ranks_no_offer_another_network_keeps_to_itself_even_if_its_index_said_so(
        platform: Platform, private_rows_in_both_networks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A demand's feasible offers come from the process's in-memory index, which holds every network's
    offers; what the demand is shown is read through row-level security as well. So even an index
    that wrongly counts another network's home-only offer as visible shows the demand nothing of it."""
    from runtime.db import init_connection
    from services.matching import handlers
    from services.matching.index import OfferIndex

    conn = await _app_connection(platform, "matching")
    await init_connection(conn)  # JSON as the service reads it
    try:
        async def home_offer(tenant: str) -> str | None:
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
                return await conn.fetchval("SELECT id::text FROM offers WHERE tenant_id = $1"
                                           " AND visibility_scope = 'home' ORDER BY updated_at DESC LIMIT 1", tenant)

        for _ in range(300):  # until matching has read both networks' offers
            theirs, ours = await home_offer(B), await home_offer(A)
            if theirs and ours:
                break
            await asyncio.sleep(0.1)
        assert theirs and ours
        index = OfferIndex()
        monkeypatch.setattr(handlers, "offer_index", lambda: index)
        demand = {"tenant": A, **demand_body(**alone_at(lonely_place())[1])}
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", A)
            await index.sync(conn)
            ours_state = (await conn.fetchrow("SELECT state FROM offers WHERE id = $1::uuid", ours))["state"]
        session = ours_state["sessions"][0]
        demand["employer"] |= {"lat": session["location"]["lat"], "lon": session["location"]["lon"]}
        demand |= {"start_from": session["start"][:10], "start_to": session["start"][:10]}
        found = index.feasible(demand)
        found_ids = {found.offer_id(i) for i in range(len(found))}
        assert ours in found_ids and theirs not in found_ids  # the code's own check
        index._offer["all"][index.row(theirs)] = True  # an index that is wrong about B's offer
        found = index.feasible(demand)
        assert theirs in {found.offer_id(i) for i in range(len(found))}
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", A)
            ranked, _, _, _ = await handlers.rank_demand(conn, demand, np.ones(384, dtype=np.float32) / 384 ** 0.5)
        shown = {r.offer_id for r in ranked}
        assert ours in shown and theirs not in shown  # the policy's
    finally:
        await conn.close()
