"""No single request can hurt the platform: oversized bodies get 413 on every service and events keep
flowing; NaN, Infinity, huge numbers, lone surrogates and deep nesting get 422; control characters in
single-line fields, non-boolean booleans and unbounded lists are refused; writes are rate-limited per
user (429 with Retry-After); answers carry security headers."""

from __future__ import annotations

import contextlib
import select
import socket
import uuid

import httpx
import pytest

from runtime.guards import RateLimits
from tests.platform import Platform, demand_body, offer_body, wait_until

# One write route per service, with a user allowed to call it.
WRITES = {
    "catalog": ("POST", "/v1/providers", "lueneburg-provider"),
    "matching": ("POST", "/v1/demands", "lueneburg-employer"),
    "identity": ("POST", "/v1/tenants", "operator"),
    "notifications": ("PUT", f"/v1/preferences/{uuid.uuid4()}", "lueneburg-admin"),
}
TWENTY_MB = 20 * 1024 * 1024


def _send(platform: Platform, service: str, content: bytes, **headers: str) -> httpx.Response:
    method, path, user = WRITES[service]
    with platform.client(service, user, **{"Content-Type": "application/json", **headers}) as api:
        return api.request(method, path, content=content)


@pytest.mark.parametrize("service", sorted(WRITES))
def test_a_20_mb_body_is_413_on_every_service(platform: Platform, service: str) -> None:
    body = b'{"name": "' + b"x" * TWENTY_MB + b'"}'
    response = _send(platform, service, body)
    assert response.status_code == 413, response.text[:300]
    problem = response.json()
    assert problem["status"] == 413 and problem["max_bytes"] < TWENTY_MB

    # Without a Content-Length (chunked), the body is cut off at the limit all the same.
    def chunks():
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    method, path, user = WRITES[service]
    with platform.client(service, user, **{"Content-Type": "application/json"}) as api:
        assert api.request(method, path, content=chunks()).status_code == 413


@pytest.mark.parametrize("where", ["url", "headers", "trailers"])
@pytest.mark.parametrize("service", ["portal", *sorted(WRITES)])
def test_a_huge_request_head_is_431_at_once_and_the_service_goes_on(platform: Platform, service: str,
                                                                      where: str) -> None:
    """8 MiB of URL, of headers or of a chunked body's trailer, before any route's guard: refused by
    the server itself. Unbounded, uvicorn joined a URL piece by piece (a 64 MiB URL held every request
    of the process for 6 s), and httptools a header or trailer."""
    host, port = platform.config.host, platform.config.ports[service]
    junk, sent, answer = b"a" * (64 * 1024), 0, b""
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall({"url": b"GET /healthz?x=", "headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
                      "trailers": b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"4\r\nbody\r\n0\r\nX-Trailer: "}[where])
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server closed as we sent
            while sent < 8 * 1024 * 1024 and not select.select([conn], [], [], 0)[0]:
                conn.sendall(b"X-Junk-" + str(sent).encode() + b": " + junk + b"\r\n" if where == "headers" else junk)
                sent += len(junk)
            while chunk := conn.recv(65536):
                answer += chunk
    assert sent < 8 * 1024 * 1024, "the whole head was read"
    assert answer.startswith(b"HTTP/1.1 431") or not answer, answer[:200]  # a reset may beat the answer
    assert httpx.get(platform.config.url(service) + "/healthz", timeout=10).status_code == 200


def test_after_huge_bodies_an_offer_published_next_is_matched_and_mailed(platform: Platform) -> None:
    """The pipeline keeps flowing: the huge provider body was refused at the door, so nothing of it
    reached the outbox, and the next offer goes all the way to a provider's mail."""
    provider_user = "westfaelisches-ruhrgebiet-provider"
    with platform.client("catalog", provider_user) as api:
        assert api.post("/v1/providers", content=b'{"name":"' + b"y" * TWENTY_MB + b'"}',
                        headers={"Content-Type": "application/json"}).status_code == 413
        provider = api.post("/v1/providers", json={"name": "Ruhr-Kolleg", "emails": ["kurse@ruhr-kolleg.example"]})
        assert provider.status_code == 201, provider.text
        location = {"zip": "44135", "city": "Dortmund", "lat": 51.51, "lon": 7.47}
        offer = api.post("/v1/offers", json=offer_body(
            provider.json()["id"], title="SPS-Programmierung mit Siemens S7", skills=["SPS", "Siemens S7"],
            description="Speicherprogrammierbare Steuerungen programmieren und in Betrieb nehmen.",
            sessions=[{"start": offer_body("x")["sessions"][0]["start"], "location": location}],
            visibility={"scope": "home"}))
        assert offer.status_code == 201, offer.text
    with platform.client("matching", "westfaelisches-ruhrgebiet-employer") as api:
        demand = api.post("/v1/demands", json=demand_body(
            title="SPS-Kenntnisse für Instandhalter", skills=["SPS", "Siemens S7"],
            description="Zwei Instandhalter sollen speicherprogrammierbare Steuerungen programmieren.",
            employer={"name": "Hütte Dortmund GmbH", "employees": 120, "lat": 51.51, "lon": 7.47}))
        assert demand.status_code == 201, demand.text
        wait_until("the offer matched", lambda: any(
            m["offer_id"] == offer.json()["id"]
            for m in api.get(f"/v1/demands/{demand.json()['id']}/matches").json()["items"]))
    wait_until("the provider's mail", lambda: platform.mails_for_offer(offer.json()["id"]))


@pytest.mark.parametrize("service", sorted(WRITES))
@pytest.mark.parametrize(("name", "body"), [
    ("NaN", b'{"name": NaN}'),
    ("Infinity", b'{"name": -Infinity}'),
    ("1e400", b'{"name": 1e400}'),
    ("huge integer", b'{"name": ' + b"9" * 5000 + b"}"),
    ("lone surrogate", b'{"name": "Caf\\ud800"}'),
    ("500-deep nesting", b'{"name": ' + b"[" * 500 + b"]" * 500 + b"}"),
])
def test_unsafe_json_is_422_on_every_service(platform: Platform, service: str, name: str, body: bytes) -> None:
    response = _send(platform, service, body)
    assert response.status_code == 422, (name, response.text[:300])
    assert response.json()["errors"][0]["type"] == "json_invalid"


def test_a_line_break_in_a_demand_title_is_refused(platform: Platform) -> None:
    """It used to be stored, and the provider's mail (its subject is the title) stayed pending forever."""
    with platform.client("matching", "lueneburg-employer") as api:
        for title in ("Stapler\nBcc: alle@example.org", "Stapler\r\nKurs", "Stapler\u2028Kurs", "Tab\x0bVT"):
            response = api.post("/v1/demands", json=demand_body(title=title))
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["field"] == "body.title"
        # A description may have paragraphs.
        assert api.post("/v1/demands", json=demand_body(description="Zeile 1\nZeile 2")).status_code == 201


@pytest.mark.parametrize(("field", "value"), [
    ("funding_required", "yes"), ("funding_required", 1), ("skills", ["SPS"] * 101), ("formats", ["online"] * 6),
    ("max_price_eur", 10**12),
])
def test_booleans_are_strict_and_lists_and_numbers_bounded(platform: Platform, field: str, value) -> None:
    with platform.client("matching", "lueneburg-employer") as api:
        response = api.post("/v1/demands", json=demand_body(**{field: value}))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == f"body.{field}"


def test_a_routes_own_rate_limit_is_per_user_with_retry_after(platform: Platform) -> None:
    """Inviting members is limited to 30 a minute per admin. A fresh admin (a new subject, a real
    signature) spends its own budget; the next invite gets 429 with Retry-After; another admin still
    invites, and reading is not limited."""
    token = platform.mint("lueneburg-admin", sub=str(uuid.uuid4()))
    with httpx.Client(base_url=platform.config.url("identity"), headers={"Authorization": f"Bearer {token}"},
                      timeout=15) as api:
        statuses = [api.post("/v1/members", json={}).status_code for _ in range(30)]  # counted, then 422
        assert statuses == [422] * 30
        refused = api.post("/v1/members", json={"email": "neu@beratung.example", "role": "counselor"})
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert api.get("/v1/members").status_code == 200
    other = platform.mint("lueneburg-admin", sub=str(uuid.uuid4()))  # (the fuzzing spends the seeded admin's)
    with httpx.Client(base_url=platform.config.url("identity"), headers={"Authorization": f"Bearer {other}"},
                      timeout=15) as api:
        assert api.post("/v1/members", json={}).status_code == 422


async def test_write_limits_are_kept_in_redis_for_all_processes(platform: Platform) -> None:
    """The per-user write limit: two limiter instances (two processes of a service) share one budget."""
    first = RateLimits(platform.config.redis_url, "5/minute")
    second = RateLimits(platform.config.redis_url, "5/minute")
    user = str(uuid.uuid4())
    waits = [await (first if i % 2 else second).retry_after(first.writes, "writes", user) for i in range(5)]
    assert waits == [None] * 5
    assert 1 <= await first.retry_after(first.writes, "writes", user) <= 60
    assert await second.retry_after(second.writes, "writes", user) is not None
    assert await first.retry_after(first.writes, "writes", str(uuid.uuid4())) is None  # another user


def test_security_headers(platform: Platform) -> None:
    for service in WRITES:
        with platform.client(service) as api:
            anonymous = api.get("/healthz")
        assert anonymous.headers["x-content-type-options"] == "nosniff"
        assert "no-store" not in anonymous.headers.get("cache-control", "")
    with platform.client("identity", "lueneburg-employer") as api:
        me = api.get("/v1/me")
    assert me.status_code == 200
    assert me.headers["cache-control"] == "no-store"
    assert me.headers["x-content-type-options"] == "nosniff"
