"""Every route of every service, walked with real tokens against its service's rule table
(services/<svc>/authz.py, runtime/authz.py):

- every role of the network calls it: a role the table refuses gets 403, one it lets through does not;
- where a role reaches only its own things (a provider its providers and offers, an employer its
  firm's demands), the same role acting for another owner of the same network gets 403 or 404;
- a user of another network gets 403 or 404 for anything of this network's that the route names;
- a route of a service's app that is missing from the table fails the suite, as does a route
  without a recipe below (how to call it). Service owners add both for the routes they add.

Rows whose service has not yet enforced the rule are listed in PENDING: those cases are expected
to fail (strict), so the day the owner enforces it the entry must go.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from runtime.authz import Reach, RuleTable
from services.identity.domain import SEED_TENANTS
from tests.platform import Platform, demand_body, offer_body

SERVICES = ("catalog", "matching", "notifications", "identity")
TENANT, OTHER_TENANT = "lueneburg", "hellweg-hochsauerland"
ROLE_USERS = {
    "provider": "provider", "employer": "employer", "counselor": "counselor", "network_admin": "admin",
    "operator": None,
}
SECOND_OWNER = {"provider": "provider2", "employer": "employer2"}

# (service, route, case) the owner has not enforced yet; case is "other owner" or "other tenant".
PENDING: set[tuple[str, str, str]] = {
}


def table(service: str) -> RuleTable:
    return importlib.import_module(f"services.{service}.authz").RULES


def routes(service: str) -> list[str]:
    app_routes = []
    api = importlib.import_module(f"services.{service}.api")
    for router in [v for v in vars(api).values() if isinstance(v, APIRouter)]:
        for route in router.routes:
            if isinstance(route, APIRoute):
                app_routes += [f"{method} {route.path}" for method in sorted(route.methods)]
    return app_routes


@dataclass
class Call:
    method: str
    path: str
    json: dict | None = None
    params: dict = field(default_factory=dict)
    content: bytes | None = None
    headers: dict = field(default_factory=dict)


class World:
    """Things of the network the walk acts on, made once (or fresh for routes that use them up) by
    their owners: lueneburg-provider's provider and offer, lueneburg-employer's demand."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._cache: dict[str, str] = {}

    def _post(self, service: str, user: str, path: str, body: dict) -> dict:
        with self.platform.client(service, user) as api:
            response = api.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def provider(self, fresh: bool = False, tenant: str = TENANT) -> str:
        key = f"provider/{tenant}"
        if fresh or key not in self._cache:
            made = self._post("catalog", f"{tenant}-provider", "/v1/providers",
                              {"name": "Walk-Akademie", "emails": [f"walk-{uuid.uuid4().hex[:6]}@akademie.example"]})
            if fresh:
                return made["id"]
            self._cache[key] = made["id"]
        return self._cache[key]

    def offer(self, fresh: bool = False, tenant: str = TENANT) -> str:
        key = f"offer/{tenant}"
        if fresh or key not in self._cache:
            made = self._post("catalog", f"{tenant}-provider", "/v1/offers",
                              offer_body(self.provider(tenant=tenant), visibility={"scope": "home"}))
            if fresh:
                return made["id"]
            self._cache[key] = made["id"]
        return self._cache[key]

    def subject(self, username: str) -> str:
        return jwt.decode(self.platform.token(username), options={"verify_signature": False})["sub"]

    def employer_alert(self, tenant: str = TENANT) -> str:
        """An alert address of the network's first employer (the call removes it)."""
        address = f"alert-{uuid.uuid4().hex[:8]}@firma-1.example"
        with self.platform.client("notifications", f"{tenant}-employer") as api:
            response = api.put("/v1/employer-alerts", json={"address": address, "mode": "instant"})
        assert response.status_code == 200, response.text
        return address

    def member(self, tenant: str = TENANT) -> str:
        """A fresh member of the network (the call removes it)."""
        body = {"email": f"walk-{uuid.uuid4().hex[:8]}@beratung.example", "role": "counselor"}
        return self._post("identity", f"{tenant}-admin", "/v1/members", body)["id"]

    def demand(self, fresh: bool = False, tenant: str = TENANT) -> str:
        key = f"demand/{tenant}"
        if fresh or key not in self._cache:
            made = self._post("matching", f"{tenant}-employer", "/v1/demands", demand_body())
            if fresh:
                return made["id"]
            self._cache[key] = made["id"]
        return self._cache[key]


# An update that deletes an offer nobody has: changes nothing, but goes through the whole import.
OPENQCAT_UPDATE = (b'<?xml version="1.0" encoding="UTF-8"?><OPENQCAT version="1.1"><HEADER/><UPDATE_CATALOG>'
                   b'<DELETE><SERVICE><PRODUCT_ID>walk-none</PRODUCT_ID></SERVICE></DELETE></UPDATE_CATALOG></OPENQCAT>')

# How to call each route, on things of `tenant` owned by its first owner. `fresh` asks for things the
# call may use up (withdraw, close).
Recipe = Callable[[World, str], Call]
RECIPES: dict[str, Recipe] = {
    # catalog
    "POST /v1/providers": lambda w, t: Call("POST", "/v1/providers", {"name": "Neu", "emails": ["neu@x.example"]}),
    "GET /v1/providers": lambda w, t: Call("GET", "/v1/providers"),
    "GET /v1/providers/{provider_id}": lambda w, t: Call("GET", f"/v1/providers/{w.provider(tenant=t)}"),
    "PUT /v1/providers/{provider_id}": lambda w, t: Call(
        "PUT", f"/v1/providers/{w.provider(tenant=t)}", {"name": "Walk-Akademie", "emails": ["walk@akademie.example"]}),
    "PUT /v1/providers/{provider_id}/members": lambda w, t: Call(
        "PUT", f"/v1/providers/{w.provider(tenant=t)}/members", {"members": [w.subject(f"{t}-provider")]}),
    "GET /v1/sharing": lambda w, t: Call("GET", "/v1/sharing"),
    "PUT /v1/sharing": lambda w, t: Call("PUT", "/v1/sharing", {"networks": []}),
    "POST /v1/offers": lambda w, t: Call("POST", "/v1/offers", offer_body(w.provider(tenant=t))),
    "POST /v1/imports/openqcat": lambda w, t: Call(
        "POST", "/v1/imports/openqcat", params={"provider_id": w.provider(tenant=t)}, content=OPENQCAT_UPDATE,
        headers={"Content-Type": "application/xml"}),
    "POST /v1/imports/wbsuche": lambda w, t: Call(
        "POST", "/v1/imports/wbsuche", params={"provider_id": w.provider(tenant=t)},
        json={"_embedded": {"termine": []}}),
    "GET /v1/public/{tenant}/offers": lambda w, t: Call("GET", f"/v1/public/{t}/offers"),
    "GET /v1/public/{tenant}/offers/{offer_id}": lambda w, t: Call("GET", f"/v1/public/{t}/offers/{w.offer(tenant=t)}"),
    "GET /v1/public/{tenant}/providers": lambda w, t: Call("GET", f"/v1/public/{t}/providers"),
    "GET /v1/offers": lambda w, t: Call("GET", "/v1/offers"),
    "GET /v1/offers/{offer_id}": lambda w, t: Call("GET", f"/v1/offers/{w.offer(tenant=t)}"),
    "PUT /v1/offers/{offer_id}": lambda w, t: Call(
        "PUT", f"/v1/offers/{w.offer(tenant=t)}", offer_body(w.provider(tenant=t), visibility={"scope": "home"})),
    "POST /v1/offers/{offer_id}/withdraw": lambda w, t: Call(
        "POST", f"/v1/offers/{w.offer(fresh=True, tenant=t)}/withdraw"),
    # matching
    "POST /v1/demands": lambda w, t: Call("POST", "/v1/demands", demand_body()),
    "GET /v1/demands/{demand_id}": lambda w, t: Call("GET", f"/v1/demands/{w.demand(tenant=t)}"),
    "POST /v1/demands/{demand_id}/close": lambda w, t: Call(
        "POST", f"/v1/demands/{w.demand(fresh=True, tenant=t)}/close"),
    "GET /v1/demands/{demand_id}/matches": lambda w, t: Call("GET", f"/v1/demands/{w.demand(tenant=t)}/matches"),
    "GET /v1/demands": lambda w, t: Call("GET", "/v1/demands"),
    "PUT /v1/demands/{demand_id}": lambda w, t: Call("PUT", f"/v1/demands/{w.demand(tenant=t)}", demand_body()),
    "GET /v1/demands/{demand_id}/offers": lambda w, t: Call("GET", f"/v1/demands/{w.demand(tenant=t)}/offers"),
    "GET /v1/matched-demands": lambda w, t: Call("GET", "/v1/matched-demands"),
    "GET /v1/insights/gaps": lambda w, t: Call("GET", "/v1/insights/gaps"),
    # notifications
    "GET /v1/deliveries": lambda w, t: Call("GET", "/v1/deliveries", params={"provider_id": w.provider(tenant=t)}),
    "GET /v1/preferences/{provider_id}": lambda w, t: Call("GET", f"/v1/preferences/{w.provider(tenant=t)}"),
    "PUT /v1/preferences/{provider_id}": lambda w, t: Call(
        "PUT", f"/v1/preferences/{w.provider(tenant=t)}", {"mode": "instant"}),
    "GET /v1/employer-alerts": lambda w, t: Call("GET", "/v1/employer-alerts"),
    "PUT /v1/employer-alerts": lambda w, t: Call(
        "PUT", "/v1/employer-alerts", {"address": "weiterbildung@firma-1.example", "mode": "instant"}),
    "DELETE /v1/employer-alerts": lambda w, t: Call(
        "DELETE", "/v1/employer-alerts", params={"address": w.employer_alert(tenant=t)}),
    "GET /v1/unsubscribe": lambda w, t: Call("GET", "/v1/unsubscribe", params={"token": "x" * 40}),
    "POST /v1/unsubscribe": lambda w, t: Call("POST", "/v1/unsubscribe", params={"token": "x" * 40}),
    # identity
    "GET /v1/me": lambda w, t: Call("GET", "/v1/me"),
    "GET /v1/tenants": lambda w, t: Call("GET", "/v1/tenants"),
    "POST /v1/tenants": lambda w, t: Call(
        "POST", "/v1/tenants", {"id": f"walk-{uuid.uuid4().hex[:8]}", "name": "Bildungsraum Walk"}),
    "PUT /v1/tenants/{tenant_id}": lambda w, t: Call("PUT", f"/v1/tenants/{t}", {"name": SEED_TENANTS[t]}),
    "GET /v1/members": lambda w, t: Call("GET", "/v1/members"),
    "POST /v1/members": lambda w, t: Call(
        "POST", "/v1/members", {"email": f"walk-{uuid.uuid4().hex[:8]}@beratung.example", "role": "counselor"}),
    "DELETE /v1/members/{user_id}": lambda w, t: Call("DELETE", f"/v1/members/{w.member(tenant=t)}"),
    "GET /v1/audit": lambda w, t: Call("GET", "/v1/audit"),
    "GET /v1/public/tenants": lambda w, t: Call("GET", "/v1/public/tenants"),
    "GET /v1/public/tenants/{tenant_id}": lambda w, t: Call("GET", f"/v1/public/tenants/{t}"),
}
# The calls above that target a thing of the network (so another owner or network must not reach it).
TARGETED = {r for r in RECIPES if "{" in r} | {"POST /v1/offers", "GET /v1/deliveries"}


def _user(role: str, tenant: str, second: bool = False) -> tuple[str, dict[str, str]]:
    if role == "operator":
        return "operator", {"X-Tenant": tenant}
    suffix = SECOND_OWNER[role] if second else ROLE_USERS[role]
    return f"{tenant}-{suffix}", {}


def _refused(response) -> bool:
    """403 or 404 (422 for a body naming a thing the caller cannot see)."""
    return response.status_code in (403, 404, 422)


def _call(platform: Platform, service: str, user: str | None, headers: dict, call: Call):
    with platform.client(service, user, **headers) as api:
        return api.request(call.method, call.path, json=call.json, params=call.params, content=call.content,
                           headers=call.headers)


@pytest.fixture(scope="module")
def world(platform: Platform) -> World:
    return World(platform)


def _cases() -> list:
    cases = []
    for service in SERVICES:
        rules = table(service)
        for route in routes(service):
            cases.append(pytest.param(service, route, "table", id=f"{service}:{route}:table"))
            rule = rules.rules.get(route)
            if rule is None or rule.public:
                continue
            for role in sorted(ROLE_USERS):
                cases.append(pytest.param(service, route, role, id=f"{service}:{route}:{role}"))
            if route in TARGETED:
                owner_bound = any(rule.of(frozenset({r})) == Reach.OWN for r in SECOND_OWNER)
                across = ("other tenant",) if route != "GET /v1/deliveries" else ()  # a list: RLS test covers it
                for case in (("other owner",) if owner_bound else ()) + across:
                    marks = [pytest.mark.xfail(strict=True, reason="not enforced yet")] \
                        if (service, route, case) in PENDING else []
                    cases.append(pytest.param(service, route, case, id=f"{service}:{route}:{case}", marks=marks))
    return cases


@pytest.mark.parametrize(("service", "route", "case"), _cases())
def test_route_against_its_rule(platform: Platform, world: World, service: str, route: str, case: str) -> None:
    rules = table(service)
    if case == "table":
        assert route in rules, f"{route} of {service} has no row in services/{service}/authz.py"
        assert route in RECIPES, f"{route} of {service} has no recipe in {__name__}.RECIPES"
        return
    rule = rules[route]
    recipe = RECIPES[route]
    if case in ROLE_USERS:
        user, headers = _user(case, TENANT)
        response = _call(platform, service, user, headers, recipe(world, TENANT))
        if rule.of(frozenset({case})) == Reach.NONE:
            assert response.status_code == 403, f"{case} must be refused: {response.status_code} {response.text}"
        else:
            assert response.status_code < 400, f"{case} must be let through: {response.status_code} {response.text}"
    elif case == "other owner":
        for role in [r for r in SECOND_OWNER if rule.of(frozenset({r})) == Reach.OWN]:
            user, headers = _user(role, TENANT, second=True)
            response = _call(platform, service, user, headers, recipe(world, TENANT))
            assert _refused(response), f"{user} acted for another {role}: {response.status_code} {response.text}"
    elif case == "other tenant":
        call = recipe(world, TENANT)
        for role in sorted(ROLE_USERS):
            if rule.of(frozenset({role})) == Reach.NONE:
                continue
            user, headers = _user(role, OTHER_TENANT)
            response = _call(platform, service, user, headers, call)
            assert _refused(response), \
                f"{user} of {OTHER_TENANT} reached {TENANT}'s thing: {response.status_code} {response.text}"
