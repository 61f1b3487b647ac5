"""Authorisation as data: each service keeps one table of route × role → how far the role reaches,
and its routes ask this module, never an ad-hoc role list.

Reach answers both questions of DESIGN.md's rule (own/other tenant × own/other owner):

- ``NONE``:   refused (403), in any tenant.
- ``OWN``:    in the acting tenant, only what the user owns (a provider user: its providers and their
              offers; an employer: its firm's demands). Another owner's thing answers 403 or 404 (the
              service decides, by whether the thing's existence may be known).
- ``TENANT``: everything of the acting tenant, any owner.
Nobody reaches another tenant's private data: the acting tenant is the token's network (an operator
names one with X-Tenant) and row-level security holds every query to it.

A route that acts in no tenant (``GET /v1/me``) uses ``ANY`` for every role that may call it.
The walk test (tests/integration/test_authorization_walk.py) calls every route of every service
with real tokens of every role and fails for a route missing from its service's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from fastapi import Depends, Request

from runtime.auth import ROLES, Principal
from runtime.http import Actor, CurrentPrincipal, Problem, get_actor


class Reach(IntEnum):
    NONE = 0
    OWN = 1
    TENANT = 2
    ANY = 3  # routes that act in no tenant: the caller's own identity, public pages


@dataclass(frozen=True)
class Rule:
    """One row: the route (``"PUT /v1/offers/{offer_id}"``) and each role's reach; roles left out: NONE."""

    route: str
    reach: Mapping[str, Reach]
    public: bool = False  # needs no token at all (one-click unsubscribe: the link itself is the credential)

    def of(self, roles: frozenset[str]) -> Reach:
        return max((self.reach.get(role, Reach.NONE) for role in roles), default=Reach.NONE)


def rule(route: str, *, public: bool = False, **reach: Reach) -> Rule:
    unknown = set(reach) - ROLES
    if unknown:
        raise ValueError(f"{route}: unknown roles {sorted(unknown)}")
    return Rule(route, reach, public)


def everyone(reach: Reach) -> dict[str, Reach]:
    return dict.fromkeys(ROLES, reach)


class RuleTable:
    """A service's rules, one per route; a route asks with ``Depends(table.actor)``."""

    def __init__(self, *rules: Rule) -> None:
        self.rules: dict[str, Rule] = {}
        for r in rules:
            if r.route in self.rules:
                raise ValueError(f"two rules for {r.route}")
            self.rules[r.route] = r

    def __getitem__(self, route: str) -> Rule:
        return self.rules[route]

    def __contains__(self, route: str) -> bool:
        return route in self.rules

    def for_request(self, request: Request) -> Rule:
        route = request.scope.get("route")
        key = f"{request.method} {getattr(route, 'path', request.url.path)}"
        if key not in self.rules:
            # A route without a rule is a programming error, refused rather than left open.
            raise Problem(403, "Forbidden", "No authorisation rule for this route.")
        return self.rules[key]

    async def actor(self, request: Request, actor: Annotated[Actor, Depends(get_actor)]) -> Authorized:
        reach = self.for_request(request).of(actor.principal.roles)
        if reach == Reach.NONE:
            raise Problem(403, "Forbidden", "Your role may not do this.")
        return Authorized(actor.principal, actor.tenant, reach)


    async def principal(self, request: Request, principal: CurrentPrincipal) -> Principal:
        """For routes that act in no tenant (``ANY``): the rule's roles, no X-Tenant."""
        if self.for_request(request).of(principal.roles) == Reach.NONE:
            raise Problem(403, "Forbidden", "Your role may not do this.")
        return principal


class Authorized(Actor):
    """An actor a rule let through, with how far it reaches. ``OWN`` means the service must check
    that the user owns what it touches (``owns``/``require_owner``)."""

    def __init__(self, principal, tenant: str, reach: Reach) -> None:
        super().__init__(principal, tenant)
        self.reach = reach

    @property
    def whole_tenant(self) -> bool:
        return self.reach >= Reach.TENANT

    def acts_for_provider(self, provider_id: str, members: frozenset[str] | set[str] | list[str] = ()) -> bool:
        """A provider user acts for provider P iff P is in its `providers` claim or it is a member of P."""
        return self.whole_tenant or str(provider_id) in self.principal.providers \
            or self.principal.subject in set(members)

    @property
    def owner(self) -> str:
        """The owner an employer acts as: its firm, or itself when it has none."""
        return self.principal.firm or self.principal.subject
