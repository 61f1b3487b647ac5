"""A network provisioned at run time, end to end: the operator provisions it (a Keycloak Organization,
its settings, TenantProvisioned), invites its admin; the admin invites a provider and an employer of
a firm; they sign in, the provider publishes, the employer's demand is matched within seconds; the
existing networks see none of its private data; the audit log shows who did what; a removed member
can no longer sign in."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.platform import Platform, alone_at, demand_body, lonely_place, offer_body, wait_until

pytestmark = pytest.mark.e2e


def _sign_in(platform: Platform, username: str) -> httpx.Response:
    return httpx.post(f"{platform.config.issuer_url}/protocol/openid-connect/token", data={
        "grant_type": "password", "client_id": "bildungsraum-cli", "username": username, "password": "dev"})


def _client(platform: Platform, service: str, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=platform.config.url(service), timeout=15,
                        headers={"Authorization": f"Bearer {token}", **headers})


def test_a_network_provisioned_at_run_time_works_end_to_end(platform: Platform) -> None:
    tenant = f"harz-{uuid.uuid4().hex[:6]}"
    settings = {"id": tenant, "name": "Bildungsraum Harz", "logo_url": "https://harz.example/logo.svg",
                "imprint_url": "https://harz.example/impressum", "privacy_url": "https://harz.example/datenschutz"}
    with platform.client("identity", "operator") as api:
        created = api.post("/v1/tenants", json=settings)
        assert created.status_code == 201, created.text
        assert created.json()["logo_url"] == settings["logo_url"]
        admin = api.post("/v1/members", headers={"X-Tenant": tenant}, json={
            "email": f"leitung@{tenant}.example", "first_name": "Hanna", "last_name": "Harz", "role": "network_admin"})
        assert admin.status_code == 201, admin.text
        assert set(admin.json()["pending_actions"]) == {"UPDATE_PASSWORD", "VERIFY_EMAIL"}

    signed_in = _sign_in(platform, admin.json()["username"])
    assert signed_in.status_code == 200, signed_in.text
    admin_token = signed_in.json()["access_token"]
    with _client(platform, "identity", admin_token) as api:
        me = api.get("/v1/me").json()
        assert me["tenant"] == tenant and me["roles"] == ["network_admin"]
        provider = api.post("/v1/members", json={"email": f"kurse@{tenant}.example", "role": "provider"})
        employer = api.post("/v1/members", json={"email": f"personal@{tenant}.example", "role": "employer",
                                                 "firm": f"{tenant}-werk"})
        assert provider.status_code == 201 and employer.status_code == 201, (provider.text, employer.text)
        # Memberships fit roles; the platform's own role is not the network's to give.
        assert api.post("/v1/members", json={"email": "x@y.example", "role": "operator"}).status_code == 422
        assert api.post("/v1/members", json={"email": "x@y.example", "role": "counselor",
                                             "firm": "f"}).status_code == 422
        members = {m["username"]: m for m in api.get("/v1/members").json()["items"]}
        assert members[employer.json()["username"]]["firm"] == f"{tenant}-werk"
        assert members[provider.json()["username"]]["roles"] == ["provider"]

    provider_token = _sign_in(platform, provider.json()["username"]).json()["access_token"]
    employer_token = _sign_in(platform, employer.json()["username"]).json()["access_token"]
    with _client(platform, "identity", employer_token) as api:
        assert api.get("/v1/me").json()["firm"] == f"{tenant}-werk"

    # Catalog and matching learn of the network from identity.tenants.v1, without a restart.
    with _client(platform, "catalog", provider_token) as api:
        wait_until("catalog to know the network", lambda: api.get("/v1/offers").status_code == 200)
        registered = api.post("/v1/providers", json={"name": "Harzer Bildungswerk",
                                                     "emails": [f"kurse@{tenant}.example"]})
        assert registered.status_code == 201, registered.text
        offer_at, demand_at = alone_at(lonely_place())  # no look-alike shared by another test takes its place
        offer = api.post("/v1/offers", json=offer_body(registered.json()["id"], visibility={"scope": "home"},
                                                       **offer_at))
        assert offer.status_code == 201, offer.text
    with _client(platform, "matching", employer_token) as api:
        wait_until("matching to know the network", lambda: api.get(f"/v1/demands/{uuid.uuid4()}").status_code == 404)
        demand = api.post("/v1/demands", json=demand_body(**demand_at))
        assert demand.status_code == 201, demand.text
        wait_until("the offer matched", lambda: any(
            m["offer_id"] == offer.json()["id"]
            for m in api.get(f"/v1/demands/{demand.json()['id']}/matches").json()["items"]))

    # The existing networks see none of it.
    with platform.client("catalog", "lueneburg-admin") as api:
        assert api.get(f"/v1/offers/{offer.json()['id']}").status_code == 404
        assert api.get(f"/v1/providers/{registered.json()['id']}").status_code == 404
    with platform.client("matching", "lueneburg-admin") as api:
        assert api.get(f"/v1/demands/{demand.json()['id']}").status_code == 404
    with platform.client("identity", "lueneburg-admin") as api:
        assert api.get("/v1/members", headers={"X-Tenant": tenant}).status_code == 403
        assert tenant not in {t["id"] for t in api.get("/v1/tenants").json()["items"]}
        assert all(e["tenant"] == "lueneburg" for e in api.get("/v1/audit").json()["items"])

    # The network's admin changes its settings; it reads its audit log; it removes a member.
    with _client(platform, "identity", admin_token) as api:
        assert api.put(f"/v1/tenants/{tenant}", json=settings).status_code == 422  # the id is not a setting
        changed = api.put(f"/v1/tenants/{tenant}", json={k: v for k, v in settings.items() if k != "id"}
                          | {"name": "Bildungsraum Harz-Nord"})
        assert changed.status_code == 200, changed.text
        assert api.put("/v1/tenants/lueneburg", json={"name": "Übernahme"}).status_code == 404
        assert api.delete(f"/v1/members/{provider.json()['id']}").status_code == 204
        assert api.delete(f"/v1/members/{provider.json()['id']}").status_code == 404
        log = api.get("/v1/audit").json()["items"]
    actions = [(e["action"], e["actor"]) for e in log]
    assert ("tenant.provisioned", "operator") in actions
    assert ("member.invited", "operator") in actions
    assert ("member.invited", admin.json()["username"]) in actions
    assert ("tenant.changed", admin.json()["username"]) in actions
    assert ("member.removed", admin.json()["username"]) == actions[0]
    assert _sign_in(platform, provider.json()["username"]).status_code == 401
    with platform.client("identity", "operator", **{"X-Tenant": tenant}) as api:
        assert [e["action"] for e in api.get("/v1/audit").json()["items"]] == [e["action"] for e in log]
        assert {t["id"]: t for t in api.get("/v1/tenants").json()["items"]}[tenant]["name"] == "Bildungsraum Harz-Nord"
