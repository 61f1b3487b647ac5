"""Identity use cases: provision and change tenants, invite and remove members, the audit log."""

from __future__ import annotations

import asyncpg

from contracts import TENANT_CREATED, TENANT_UPDATED, TENANTS_TOPIC
from runtime import audit
from runtime.auth import Principal
from runtime.db import tenant_transaction
from runtime.errors import Conflict, NotFound
from runtime.events import Event
from runtime.outbox import add_to_outbox
from services.identity.directory import Directory, Member, NewMember, Organization
from services.identity.domain import SEED_TENANTS, CreateTenant, InviteMember, TenantSettings, default_username

SOURCE = "identity"


def _tenant_state(row: asyncpg.Record) -> dict:
    state = {"id": row["id"], "name": row["name"], "status": row["status"],
             "created_at": row["created_at"].isoformat()}
    for key in ("logo_url", "imprint_url", "privacy_url"):
        if row[key]:
            state[key] = row[key]
    return state


def _urls(settings: TenantSettings) -> tuple[str | None, str | None, str | None]:
    return tuple(str(u) if u else None for u in (settings.logo_url, settings.imprint_url, settings.privacy_url))


def _org_attributes(settings: TenantSettings) -> dict[str, list[str]]:
    return {k: [v] for k, v in zip(("logo_url", "imprint_url", "privacy_url"), _urls(settings), strict=True) if v}


async def _audit(conn: asyncpg.Connection, tenant: str, actor: Principal | None, action: str, target: str,
                 details: dict | None = None) -> None:
    await audit.record(conn, tenant, actor.subject if actor else "system", actor.username if actor else "system",
                       action, target, details)


async def provision_tenant(pool: asyncpg.Pool, directory: Directory, command: CreateTenant,
                           actor: Principal | None) -> dict:
    """The tenant's Organization first (idempotent), then the row, its audit entry and
    TenantProvisioned (`tenant.created`) in one transaction; other services learn of it from the topic."""
    async with pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM tenants WHERE id = $1", command.id):
            raise Conflict(f"tenant {command.id!r} exists")
    organization = await directory.ensure_organization(command.id, command.name, _org_attributes(command))
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO tenants (id, name, logo_url, imprint_url, privacy_url, organization_id)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING *",
            command.id, command.name, *_urls(command), organization.id,
        )
        if row is None:
            raise Conflict(f"tenant {command.id!r} exists")
        state = _tenant_state(row)
        await add_to_outbox(conn, TENANTS_TOPIC, Event(TENANT_CREATED, SOURCE, command.id, command.id, state))
        await _audit(conn, command.id, actor, "tenant.provisioned", command.id, state)
    return state


async def change_tenant(pool: asyncpg.Pool, directory: Directory, tenant: str, settings: TenantSettings,
                        actor: Principal) -> dict:
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant):
            raise NotFound(f"tenant {tenant}")
    await directory.ensure_organization(tenant, settings.name, _org_attributes(settings))
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE tenants SET name = $2, logo_url = $3, imprint_url = $4, privacy_url = $5 WHERE id = $1"
            " RETURNING *", tenant, settings.name, *_urls(settings))
        state = _tenant_state(row)
        await add_to_outbox(conn, TENANTS_TOPIC, Event(TENANT_UPDATED, SOURCE, tenant, tenant, state))
        await _audit(conn, tenant, actor, "tenant.changed", tenant, state)
    return state


async def seed_tenants(pool: asyncpg.Pool, directory: Directory) -> None:
    for tenant_id, name in SEED_TENANTS.items():
        try:
            await provision_tenant(pool, directory, CreateTenant(id=tenant_id, name=name), None)
        except Conflict:
            pass


async def list_tenants(conn: asyncpg.Connection, only: str | None = None) -> list[dict]:
    rows = await conn.fetch(
        "SELECT * FROM tenants WHERE $1::text IS NULL OR id = $1 ORDER BY id", only)
    return [_tenant_state(r) for r in rows]


async def _organization(pool: asyncpg.Pool, directory: Directory, tenant: str) -> Organization:
    async with pool.acquire() as conn:
        name = await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tenant)
    if name is None:
        raise NotFound(f"tenant {tenant}")
    organization = await directory.organization(tenant)
    if organization is None:  # provisioned before Keycloak knew it (restored directory): make it again
        organization = await directory.ensure_organization(tenant, name, {})
    return organization


def member_view(member: Member) -> dict:
    return {"id": member.id, "username": member.username, "email": member.email,
            "first_name": member.first_name, "last_name": member.last_name,
            "roles": sorted(member.roles), "providers": sorted(member.providers), "firm": member.firm,
            "pending_actions": list(member.required_actions)}


async def list_members(pool: asyncpg.Pool, directory: Directory, tenant: str) -> list[dict]:
    organization = await _organization(pool, directory, tenant)
    return [member_view(m) for m in sorted(await directory.members(organization), key=lambda m: m.username)]


async def invite_member(pool: asyncpg.Pool, directory: Directory, tenant: str, command: InviteMember,
                        actor: Principal) -> dict:
    organization = await _organization(pool, directory, tenant)
    member = await directory.invite(organization, NewMember(
        username=command.username or default_username(str(command.email), tenant), email=str(command.email),
        first_name=command.first_name, last_name=command.last_name, role=command.role,
        providers=frozenset(command.providers), firm=command.firm))
    view = member_view(member)
    async with tenant_transaction(pool, tenant) as conn:
        await _audit(conn, tenant, actor, "member.invited", member.username,
                     {"role": command.role, "providers": view["providers"], "firm": command.firm})
    return view


async def remove_member(pool: asyncpg.Pool, directory: Directory, tenant: str, user_id: str,
                        actor: Principal) -> None:
    organization = await _organization(pool, directory, tenant)
    if user_id == actor.subject:
        raise Conflict("an admin cannot remove itself; ask another admin of the network")
    if not await directory.remove(organization, user_id):
        raise NotFound(f"member {user_id}")
    async with tenant_transaction(pool, tenant) as conn:
        await _audit(conn, tenant, actor, "member.removed", user_id)


async def audit_log(pool: asyncpg.Pool, tenant: str, limit: int, offset: int) -> list[dict]:
    async with tenant_transaction(pool, tenant) as conn:
        return await audit.read(conn, limit, offset)
