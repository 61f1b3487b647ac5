"""A tenant added by the operator is usable at once in every service: no code change, no restart."""

from __future__ import annotations

import uuid

from tests.platform import Platform, wait_until


def test_operator_adds_a_tenant_that_other_services_learn_of(platform: Platform) -> None:
    tenant = f"harz-{uuid.uuid4().hex[:6]}"
    with platform.client("catalog", "operator", **{"X-Tenant": tenant}) as api:
        assert api.get("/v1/offers").status_code == 403  # not a tenant yet

    with platform.client("identity", "operator") as api:
        response = api.post("/v1/tenants", json={"id": tenant, "name": "Bildungsraum Harz"})
        assert response.status_code == 201, response.text
        assert api.post("/v1/tenants", json={"id": tenant, "name": "again"}).status_code == 409
        assert tenant in {t["id"] for t in api.get("/v1/tenants").json()["items"]}

    for service in ("catalog", "matching"):
        with platform.client(service, "operator", **{"X-Tenant": tenant}) as api:
            path = "/v1/offers" if service == "catalog" else f"/v1/demands/{uuid.uuid4()}"
            expected = 200 if service == "catalog" else 404  # 404: known tenant, no such demand
            wait_until(f"{service} to know {tenant}", lambda api=api, path=path, expected=expected:
                       api.get(path).status_code == expected, timeout=30)
