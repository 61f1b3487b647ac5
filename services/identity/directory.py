"""The identity provider's directory: Keycloak Organizations (tenants), users, realm roles.

``Directory`` is the port the handlers use; ``KeycloakDirectory`` the adapter, built on python-keycloak's
``KeycloakAdmin`` (async calls). The same adapter runs against a real Keycloak 26 and against the dev
issuer, which serves the subset of the Admin REST API used here at Keycloak's paths
(tests/integration/test_keycloak_contract.py runs it against both)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakError

# Keycloak asks an invited user to set a password and confirm the e-mail at first sign-in.
INVITE_ACTIONS = ["UPDATE_PASSWORD", "VERIFY_EMAIL"]


class DirectoryError(Exception):
    """The directory refused or failed; ``status`` is its HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Organization:
    id: str
    alias: str
    name: str


@dataclass(frozen=True)
class Member:
    id: str
    username: str
    email: str | None
    first_name: str
    last_name: str
    roles: frozenset[str]
    providers: frozenset[str] = field(default_factory=frozenset)
    firm: str | None = None
    required_actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewMember:
    username: str
    email: str
    first_name: str
    last_name: str
    role: str
    providers: frozenset[str] = field(default_factory=frozenset)
    firm: str | None = None


class Directory(Protocol):
    async def ensure_organization(self, alias: str, name: str, attributes: dict[str, list[str]]) -> Organization: ...
    async def organization(self, alias: str) -> Organization | None: ...
    async def members(self, organization: Organization) -> list[Member]: ...
    async def invite(self, organization: Organization, member: NewMember) -> Member: ...
    async def remove(self, organization: Organization, user_id: str) -> bool: ...


def _member(user: dict, roles: frozenset[str]) -> Member:
    attributes = user.get("attributes") or {}
    firm = (attributes.get("firm") or [None])[0]
    return Member(
        id=user["id"], username=user["username"], email=user.get("email"),
        first_name=user.get("firstName") or "", last_name=user.get("lastName") or "", roles=roles,
        providers=frozenset(attributes.get("providers") or []), firm=firm,
        required_actions=tuple(user.get("requiredActions") or ()),
    )


class KeycloakDirectory:
    """Directory over Keycloak's Admin REST API. ``platform_roles`` limits which realm roles are
    reported (Keycloak also lists default and composite roles)."""

    def __init__(self, admin: KeycloakAdmin, platform_roles: frozenset[str]) -> None:
        self._admin = admin
        self._roles = platform_roles

    @classmethod
    def connect(cls, server_url: str, realm: str, client_id: str, client_secret: str,
                platform_roles: frozenset[str]) -> KeycloakDirectory:
        # The service account of identity's confidential client signs in to its own realm.
        admin = KeycloakAdmin(server_url=server_url.rstrip("/") + "/", realm_name=realm, user_realm_name=realm,
                              client_id=client_id, client_secret_key=client_secret, timeout=10)
        return cls(admin, platform_roles)

    async def organization(self, alias: str) -> Organization | None:
        try:
            found = await self._admin.a_get_organizations({"search": alias, "exact": "true"})
        except KeycloakError as exc:
            raise DirectoryError(f"cannot list organizations: {exc}", exc.response_code) from exc
        for org in found:
            if org.get("alias") == alias:
                return Organization(org["id"], org["alias"], org["name"])
        return None

    async def ensure_organization(self, alias: str, name: str, attributes: dict[str, list[str]]) -> Organization:
        """The tenant's Organization, made when missing and its name and attributes brought up to date."""
        payload = {"name": name, "alias": alias, "enabled": True, "attributes": attributes,
                   "domains": [], "description": f"Bildungsraum-Netzwerk {name}"}
        try:
            existing = await self.organization(alias)
            if existing is None:
                org_id = await self._admin.a_create_organization(payload)
                return Organization(org_id, alias, name)
            await self._admin.a_update_organization(existing.id, {**payload, "id": existing.id})
            return Organization(existing.id, alias, name)
        except KeycloakError as exc:
            raise DirectoryError(f"cannot provision organization {alias!r}: {exc}", exc.response_code) from exc

    async def _roles_of(self, user_id: str) -> frozenset[str]:
        mapped = await self._admin.a_get_realm_roles_of_user(user_id)
        return frozenset(r["name"] for r in mapped) & self._roles

    async def members(self, organization: Organization) -> list[Member]:
        try:
            users = await self._admin.a_get_organization_members(organization.id)
            return [_member(u, await self._roles_of(u["id"])) for u in users]
        except KeycloakError as exc:
            raise DirectoryError(f"cannot list members: {exc}", exc.response_code) from exc

    async def invite(self, organization: Organization, member: NewMember) -> Member:
        """Create the user (asked to set a password and verify its e-mail), make it a member of the
        organization, map its realm role, and send Keycloak's action mail."""
        attributes: dict[str, list[str]] = {"tenant": [organization.alias]}
        if member.providers:
            attributes["providers"] = sorted(member.providers)
        if member.firm:
            attributes["firm"] = [member.firm]
        payload = {"username": member.username, "email": member.email, "firstName": member.first_name,
                   "lastName": member.last_name, "enabled": True, "emailVerified": False,
                   "attributes": attributes, "requiredActions": INVITE_ACTIONS}
        try:
            user_id = await self._admin.a_create_user(payload, exist_ok=False)
        except KeycloakError as exc:
            raise DirectoryError(f"cannot create user: {exc}", exc.response_code) from exc
        try:
            await self._admin.a_organization_user_add(user_id, organization.id)
            role = await self._admin.a_get_realm_role(member.role)
            await self._admin.a_assign_realm_roles(user_id, [role])
        except KeycloakError as exc:
            # Leave no half-made account behind: without membership and role it could do nothing anyway.
            await self._admin.a_delete_user(user_id)
            raise DirectoryError(f"cannot set up user: {exc}", exc.response_code) from exc
        try:
            await self._admin.a_send_update_account(user_id, INVITE_ACTIONS)
        except KeycloakError:
            pass  # no SMTP configured in the realm: the admin can resend; the account stands
        user = await self._admin.a_get_user(user_id)
        return _member(user, frozenset({member.role}))

    async def remove(self, organization: Organization, user_id: str) -> bool:
        """Delete a member of this organization; False when the user is not one of its members."""
        try:
            memberships = await self._admin.a_get_user_organizations(user_id)
        except KeycloakError as exc:
            if exc.response_code == 404:
                return False
            raise DirectoryError(f"cannot read user: {exc}", exc.response_code) from exc
        if not any(o.get("id") == organization.id for o in memberships):
            return False
        try:
            await self._admin.a_organization_user_remove(user_id, organization.id)
            await self._admin.a_delete_user(user_id)
        except KeycloakError as exc:
            raise DirectoryError(f"cannot remove user: {exc}", exc.response_code) from exc
        return True
