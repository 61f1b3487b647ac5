"""The portal's calls to the services (services/portal/backends.py) against a real HTTP server on a
local socket: what is sent, how answers become bodies and errors, and that the one session the
portal shares between all its visitors carries nothing from one visitor's call into another's."""

from __future__ import annotations

import pytest
from aiohttp import web

from services.portal.backends import (
    BackendError,
    BackendMissing,
    BackendNotFound,
    Backends,
    backend_calls,
    open_session,
    query_pairs,
    visitor_address,
)
from services.portal.settings import PortalSettings


async def _echo(request: web.Request) -> web.Response:
    """Answers what it got; sets a cookie, as a careless service might."""
    response = web.json_response({"query": [list(p) for p in request.query.items()],
                                  "cookie": request.headers.get("Cookie"),
                                  "authorization": request.headers.get("Authorization"),
                                  "forwarded_for": request.headers.get("X-Forwarded-For"),
                                  "body": (await request.read()).decode() or None})
    response.set_cookie("visitor", request.headers.get("Authorization") or "anonymous")
    return response


async def _status(request: web.Request) -> web.Response:
    status = int(request.match_info["status"])
    if status == 302:
        raise web.HTTPFound("/echo")
    return web.json_response({"detail": "Demand not found in this network"}, status=status)


async def _text(request: web.Request) -> web.Response:
    return web.Response(text="Grüße", content_type="text/plain")


@pytest.fixture
async def service():
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/status/{status}", _status)
    app.router.add_get("/text", _text)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    settings = PortalSettings(catalog_url=f"http://localhost:{port}", backend_timeout_seconds=2)
    session = open_session(settings)
    yield Backends(settings, session)
    await session.close()
    await runner.cleanup()


def test_query_parameters_are_written_as_before():
    assert query_pairs([("format", "online"), ("format", "presence"), ("page", 2), ("lat", 51.4)]) == [
        ("format", "online"), ("format", "presence"), ("page", "2"), ("lat", "51.4")]
    assert query_pairs({"mine": True, "all": False, "empty": None}) == [("mine", "true"), ("all", "false"),
                                                                        ("empty", "")]
    assert query_pairs(None) == []


async def test_a_call_sends_the_visitors_token_address_and_query(service):
    visitor_address.set("203.0.113.7")
    body = await service.get("catalog", "/echo", token="abc", params=[("q", "Stapler führen"), ("format", "online"),
                                                                       ("format", "hybrid")])
    assert body["authorization"] == "Bearer abc"
    assert body["forwarded_for"] == "203.0.113.7"
    assert body["query"] == [["q", "Stapler führen"], ["format", "online"], ["format", "hybrid"]]
    posted = await service.post("catalog", "/echo", json={"title": "SPS-Grundkurs"})
    assert posted["body"] == '{"title": "SPS-Grundkurs"}'


async def test_no_cookie_of_one_visitors_call_reaches_the_next(service):
    first = await service.get("catalog", "/echo", token="first-visitor")
    second = await service.get("catalog", "/echo")
    assert first["cookie"] is None and second["cookie"] is None


async def test_answers_become_the_errors_pages_explain(service):
    with pytest.raises(BackendNotFound):
        await service.get("catalog", "/status/404")
    with pytest.raises(BackendMissing) as missing:
        await service.get("catalog", "/status/429")
    assert missing.value.status == 429
    with pytest.raises(BackendError) as refused:
        await service.get("catalog", "/status/422")
    assert refused.value.status == 422 and refused.value.body["detail"].startswith("Demand")
    moved = await service.call("catalog", "GET", "/status/302")  # the service's answer, not followed
    assert moved.status == 302
    assert await service.get("catalog", "/text") == "Grüße"


async def test_an_unreachable_service_is_missing_and_the_call_is_counted(service):
    service.urls["catalog"] = "http://127.0.0.1:9"  # discard port: nothing listens
    calls: list = []
    backend_calls.set(calls)
    with pytest.raises(BackendMissing) as missing:
        await service.get("catalog", "/echo")
    assert missing.value.status == 503
    assert [c[0] for c in calls] == ["catalog"]
