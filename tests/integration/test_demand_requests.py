"""Requests from the public demand form: taken without login, seen only by the network's
counsellors, opened as a demand once."""

from __future__ import annotations

import httpx

from tests.platform import Platform, demand_body


def test_a_request_is_opened_once_and_only_by_its_network(platform: Platform):
    matching = platform.config.url("matching")
    sent = httpx.post(f"{matching}/v1/public/lueneburg/demand-requests",
                      json=demand_body(title="Erste Hilfe für die Backstube"))
    assert sent.status_code == 201, sent.text
    request_id = sent.json()["id"]

    bad = httpx.post(f"{matching}/v1/public/lueneburg/demand-requests", json={"title": "nur ein Titel"})
    assert bad.status_code == 422
    assert httpx.post(f"{matching}/v1/public/nirgendwo/demand-requests", json=demand_body()).status_code == 404

    with platform.client("matching", "hellweg-hochsauerland-counselor") as foreign:
        assert foreign.get(f"/v1/demand-requests/{request_id}").status_code == 404
        assert request_id not in {r["id"] for r in foreign.get("/v1/demand-requests").json()["items"]}
        assert foreign.post(f"/v1/demand-requests/{request_id}/open").status_code == 404
    with platform.client("matching", "lueneburg-employer") as employer:
        assert employer.get("/v1/demand-requests").status_code == 403

    with platform.client("matching", "lueneburg-counselor") as counselor:
        listed = counselor.get("/v1/demand-requests", params={"status": "new"}).json()["items"]
        assert request_id in {r["id"] for r in listed}
        opened = counselor.post(f"/v1/demand-requests/{request_id}/open")
        again = counselor.post(f"/v1/demand-requests/{request_id}/open")
        assert opened.status_code == again.status_code == 200
        demand_id = opened.json()["demand_id"]
        assert demand_id and again.json()["demand_id"] == demand_id  # a second click opens nothing twice
        demand = counselor.get(f"/v1/demands/{demand_id}")
        assert demand.status_code == 200 and demand.json()["title"] == "Erste Hilfe für die Backstube"
        assert request_id not in {r["id"] for r in counselor.get(
            "/v1/demand-requests", params={"status": "new"}).json()["items"]}
        counselor.post(f"/v1/demands/{demand_id}/close")  # leave no open demand to later tests' offers
