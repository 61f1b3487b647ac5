"""Bad input gets a clear error and changes nothing: malformed JSON, wrong types, missing,
expired, forged or foreign tokens, wrong roles, unknown tenants."""

from __future__ import annotations

import base64
import socket
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.platform import Platform, offer_body

PROVIDER = "lueneburg-provider"


@pytest.fixture(scope="module")
def provider(platform: Platform) -> dict:
    with platform.client("catalog", PROVIDER) as api:
        response = api.post("/v1/providers", json={"name": "Heide-Akademie", "emails": ["kurse@heide.example"]})
    assert response.status_code == 201, response.text
    return response.json()


def _offer_count(platform: Platform) -> int:
    with platform.client("catalog", PROVIDER) as api:
        return api.get("/v1/offers", params={"page_size": 1}).json()["total"]


def _assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status and problem["title"]
    return problem


def test_malformed_json_is_422_and_changes_nothing(platform: Platform, provider: dict) -> None:
    before = _offer_count(platform)
    with platform.client("catalog", PROVIDER) as api:
        response = api.post("/v1/offers", content=b'{"title": "Schwei', headers={"Content-Type": "application/json"})
    problem = _assert_problem(response, 422)
    assert problem["errors"] and problem["errors"][0]["type"] == "json_invalid"
    with platform.client("catalog", PROVIDER, **{"Content-Type": "application/json"}) as api:
        for body in (b'{"title": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000):  # bad UTF-8; nesting too deep
            problem = _assert_problem(api.post("/v1/offers", content=body), 422)
            assert problem["errors"][0]["type"] == "json_invalid"
    assert _offer_count(platform) == before


def test_wrong_types_are_422_naming_each_field(platform: Platform, provider: dict) -> None:
    before = _offer_count(platform)
    body = offer_body(provider["id"], price_eur="teuer", format="telepathy", sessions=[{"start": "soon"}])
    with platform.client("catalog", PROVIDER) as api:
        problem = _assert_problem(api.post("/v1/offers", json=body), 422)
    fields = {e["field"] for e in problem["errors"]}
    assert {"body.price_eur", "body.format", "body.sessions.0.start"} <= fields
    assert _offer_count(platform) == before

    with platform.client("matching", "lueneburg-employer") as api:
        problem = _assert_problem(api.post("/v1/demands", json={"title": 7, "participants": "viele"}), 422)
    fields = {e["field"] for e in problem["errors"]}
    assert {"body.title", "body.participants", "body.employer", "body.formats"} <= fields


@pytest.mark.parametrize("networks", [["*"], ["Lüneburg"], ["x" * 300], ["lueneburg"] * 101])
def test_an_offer_shared_with_something_not_a_network_is_422(platform: Platform, provider: dict,
                                                              networks: list[str]) -> None:
    """Only network ids: "*" was stored and read as "every network" by search, as a network of that
    name by matching."""
    before = _offer_count(platform)
    body = offer_body(provider["id"], visibility={"scope": "networks", "networks": networks})
    with platform.client("catalog", PROVIDER) as api:
        problem = _assert_problem(api.post("/v1/offers", json=body), 422)
    assert {e["field"] for e in problem["errors"]} & {"body.visibility.networks", "body.visibility.networks.0"}
    assert _offer_count(platform) == before


def test_search_rejects_bad_query_parameters(platform: Platform) -> None:
    with platform.client("catalog", PROVIDER) as api:
        problem = _assert_problem(api.get("/v1/offers", params={"radius_km": 5, "lat": 53.2, "lon": 10.4}), 422)
        assert problem["errors"][0]["field"] == "query.radius_km"
        _assert_problem(api.get("/v1/offers", params={"radius_km": 50}), 422)
        _assert_problem(api.get("/v1/offers", params={"funding": "lotto"}), 422)
        deep = _assert_problem(api.get("/v1/offers", params={"page": 12, "page_size": 100}), 422)
        assert deep["errors"][0]["field"] == "query.page"  # a numbered page starts at most 1,000 offers in
        for rank in ("1e39", "NaN", "-Infinity"):  # ranks a PostgreSQL real cannot hold: no cursor of ours
            forged = base64.urlsafe_b64encode(f'[{rank}, "{uuid.uuid4()}"]'.encode()).decode().rstrip("=")
            for path in ("/v1/offers", "/v1/public/lueneburg/offers"):
                problem = _assert_problem(api.get(path, params={"cursor": forged}), 422)
                assert problem["errors"][0]["field"] == "query.cursor"


def _post_offer_with(platform: Platform, provider: dict, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with platform.client("catalog", **headers) as api:
        return api.post("/v1/offers", json=offer_body(provider["id"]))


def test_missing_expired_forged_and_unsigned_tokens_are_401(platform: Platform, provider: dict) -> None:
    before = _offer_count(platform)
    now = int(time.time())
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(platform.token(PROVIDER), options={"verify_signature": False})
    kid = platform.signing_key()["kid"]
    bad_tokens = {
        "missing": None,
        "garbage": "not-a-jwt",
        "expired": platform.mint(PROVIDER, exp=now - 120, iat=now - 420),
        "other issuer": platform.mint(PROVIDER, iss="http://evil.example/realms/bildungsraum"),
        "other audience": platform.mint(PROVIDER, aud=["someone-else"]),
        "forged signature": jwt.encode(claims, forged_key, algorithm="RS256", headers={"kid": kid}),
        "unknown key": jwt.encode(claims, forged_key, algorithm="RS256", headers={"kid": "rotated-away"}),
        "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": kid}),
        "hs256 with a guessed secret": jwt.encode(claims, "a-guessed-shared-secret-of-32-bytes!", algorithm="HS256",
                                                  headers={"kid": kid}),
    }
    for name, token in bad_tokens.items():
        response = _post_offer_with(platform, provider, token)
        problem = _assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert problem["detail"], name
    assert _offer_count(platform) == before


def test_wrong_role_is_403(platform: Platform, provider: dict) -> None:
    before = _offer_count(platform)
    _assert_problem(_post_offer_with(platform, provider, platform.token("lueneburg-employer")), 403)
    with platform.client("identity", "lueneburg-admin") as api:
        _assert_problem(api.post("/v1/tenants", json={"id": "harz", "name": "Harz"}), 403)
    assert _offer_count(platform) == before


def test_tokens_for_another_or_unknown_tenant_are_refused(platform: Platform, provider: dict) -> None:
    with platform.client("catalog", "hellweg-hochsauerland-provider") as api:
        # a network user cannot act in another network, nor reach its private provider
        _assert_problem(api.get("/v1/offers", headers={"X-Tenant": "lueneburg"}), 403)
        _assert_problem(api.get(f"/v1/providers/{provider['id']}"), 404)
    with platform.client("catalog", "operator") as api:
        _assert_problem(api.get("/v1/offers"), 400)
        problem = _assert_problem(api.get("/v1/offers", headers={"X-Tenant": "atlantis"}), 403)
        assert "atlantis" in problem["detail"]
        assert api.get("/v1/offers", headers={"X-Tenant": "lueneburg"}).status_code == 200
    unknown = platform.mint(PROVIDER, tenant="atlantis", organization=["atlantis"])
    _assert_problem(_post_offer_with(platform, provider, unknown), 403)


def test_identity_answers_who_i_am_and_my_tenants(platform: Platform) -> None:
    with platform.client("identity", "lueneburg-employer") as api:
        me = api.get("/v1/me").json()
        assert me["tenant"] == "lueneburg" and me["roles"] == ["employer"]
        assert [t["id"] for t in api.get("/v1/tenants").json()["items"]] == ["lueneburg"]
    with platform.client("identity", "operator") as api:
        ids = {t["id"] for t in api.get("/v1/tenants").json()["items"]}
        assert {"hellweg-hochsauerland", "westfaelisches-ruhrgebiet", "lueneburg"} <= ids
        assert api.get("/v1/me").json()["tenant"] is None


def test_health_readiness_and_metrics(platform: Platform) -> None:
    for service in ("identity", "catalog", "matching", "notifications"):
        with platform.client(service) as api:
            assert api.get("/healthz").json() == {"status": "ok"}
            ready = api.get("/readyz").json()
            extra = {"notifications": {"redis"}, "matching": {"offer_index"}}.get(service, set())
            assert ready["status"] == "ready"
            assert set(ready["checks"]) == {"database", "migrations", "tenants", "broker", "issuer"} | extra
            assert "http_requests_total" in api.get("/metrics").text
            assert api.get("/openapi.json").status_code == 200


def test_an_idle_keep_alive_connection_outlives_a_clients_pool_expiry(platform: Platform) -> None:
    """httpx keeps an idle connection 5 s and reuses it until then; a server closing it at 5 s (uvicorn's
    default) races that reuse, and the request is lost ("Server disconnected")."""
    host, port = platform.config.host, platform.config.ports["catalog"]
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        assert _whole_response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # past both clocks of 5 s
        conn.sendall(request)
        assert _whole_response(conn).startswith(b"HTTP/1.1 200")  # b"" when the server has closed it


def _whole_response(conn: socket.socket) -> bytes:
    """One response, its head and its body (which may come in a segment of its own), or b"" at once
    when the server closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(4096)
    return head + b"\r\n\r\n" + body


def test_nul_characters_are_refused_not_stored(platform: Platform, provider: dict) -> None:
    with platform.client("catalog", PROVIDER) as api:
        body = offer_body(provider["id"], skills=["Schwei\u0000ßen"])
        problem = _assert_problem(api.post("/v1/offers", json=body), 422)
        assert problem["errors"][0]["field"] == "body.skills"
        problem = _assert_problem(api.get("/v1/offers", params={"q": "a\u0000b"}), 422)
        assert problem["errors"][0]["field"] == "query.q"
    with platform.client("identity", "operator") as api:
        _assert_problem(api.post("/v1/tenants", json={"id": "nul-tenant", "name": "N\u0000"}), 422)
    with platform.client("notifications") as api:
        _assert_problem(api.get("/v1/unsubscribe", params={"token": "x" * 20 + "\u0000"}), 422)
