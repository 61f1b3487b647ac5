"""The portal's protections as an attacker would probe them, over real HTTP against the real
issuer, Redis and services."""

from __future__ import annotations

import hashlib
import json
import re
import time

import httpx
import pytest
import redis

from tests.e2e.portal.conftest import PortalUser
from tests.platform import Platform, demand_body, server_timing

pytestmark = pytest.mark.e2e

EMPLOYER = "lueneburg-employer"


def test_a_form_without_or_with_a_wrong_csrf_token_is_refused(visitor: PortalUser):
    home = visitor.sign_in(EMPLOYER)
    assert home.status_code == 200 and "Meine Weiterbildungsbedarfe" in home.text
    answers = {"title": "Staplerschein", "participants": "2"}

    missing = visitor.http.post("/arbeitgeber/bedarfe/neu/bedarf", data=answers)
    wrong = visitor.http.post("/arbeitgeber/bedarfe/neu/bedarf", data={**answers, "csrf_token": "x" * 43})
    for refused in (missing, wrong):
        assert refused.status_code == 403
        assert "Formular abgelaufen" in refused.text
    # Nothing was kept: the step's page still shows the defaults, not the refused answers.
    assert 'value="Staplerschein"' not in visitor.http.get("/arbeitgeber/bedarfe/neu/bedarf").text

    token = visitor.csrf("/arbeitgeber/bedarfe/neu/bedarf")
    accepted = visitor.http.post("/arbeitgeber/bedarfe/neu/bedarf", data={**answers, "csrf_token": token})
    assert accepted.status_code == 303 and accepted.headers["location"].endswith("/betrieb")


def test_sign_out_needs_the_csrf_token_too(visitor: PortalUser):
    visitor.sign_in(EMPLOYER)
    assert visitor.http.post("/abmelden").status_code == 403
    assert visitor.http.get("/arbeitgeber").status_code == 200  # still signed in


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example",
                                    "https:/evil.example", "javascript:alert(1)"])
def test_next_pointing_off_site_is_ignored_after_sign_in(visitor: PortalUser, target: str):
    landed = visitor.sign_in(EMPLOYER, next_path=target)
    assert landed.url.host == "127.0.0.1" and landed.url.port == int(visitor.base.rsplit(":", 1)[1])
    assert landed.url.path == "/arbeitgeber"


def test_next_within_the_portal_is_followed(visitor: PortalUser):
    landed = visitor.sign_in(EMPLOYER, next_path="/arbeitgeber/bedarfe/neu/zeit")
    assert landed.url.path == "/arbeitgeber/bedarfe/neu/zeit"


def test_session_cookie_is_httponly_lax_and_renewed_at_sign_in(visitor: PortalUser):
    form = visitor.http.get("/lueneburg/bedarf-melden/bedarf")  # an anonymous form: a session for its CSRF token
    cookies = [c for c in form.headers.get_list("set-cookie") if c.startswith("br_portal_session=")]
    assert len(cookies) == 1
    flags = {part.strip().lower() for part in cookies[0].split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= flags
    assert "secure" not in flags  # plain http in test; PortalSettings.secure_cookies sets it in production

    anonymous_id = visitor.http.cookies.get("br_portal_session")
    visitor.sign_in(EMPLOYER)
    signed_in_id = visitor.http.cookies.get("br_portal_session")
    assert signed_in_id and signed_in_id != anonymous_id  # no session fixation


def test_reading_public_pages_sets_no_cookie(visitor: PortalUser):
    assert "set-cookie" not in visitor.http.get("/lueneburg/").headers


def test_pages_forbid_framing_and_inline_script(visitor: PortalUser):
    page = visitor.http.get("/lueneburg/")
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["script-src"] == "'self'" and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text  # the only script is /static/portal.js


def test_a_page_says_how_long_the_catalog_took_of_it(visitor: PortalUser):
    """Server-Timing: the catalog's part of a search page and the whole (what make bench-portal
    subtracts to find the portal's own part)."""
    timings = server_timing(visitor.http.get("/lueneburg/", params={"q": "Staplerschein"}).headers["server-timing"])
    assert 0 < timings["catalog"] <= timings["total"]


def test_the_catalogs_public_limit_counts_each_visitor_of_the_portal_not_the_portal(visitor: PortalUser):
    """The portal passes its visitor's address on: one visitor who hammers a search page runs into
    the catalog's limit for one page (60 a minute), the next visitor's same search still works."""
    page = {"q": f"Limit{time.monotonic_ns()}"}  # a page of this test's own: its own counter

    def search(address: str) -> str:
        return visitor.http.get("/lueneburg/", params=page, headers={"X-Forwarded-For": address}).text

    pages = [search("203.0.113.7") for _ in range(61)]
    assert "vorübergehend nicht verfügbar" not in pages[0]
    assert "vorübergehend nicht verfügbar" in pages[-1]
    assert "vorübergehend nicht verfügbar" not in search("198.51.100.23")


def test_a_user_of_another_network_cannot_open_a_demand(platform: Platform, visitor: PortalUser):
    with platform.client("matching", EMPLOYER) as api:
        created = api.post("/v1/demands", json=demand_body(title="Schweißkurs für die Werkhalle Lüneburg"))
    assert created.status_code == 201, created.text
    demand_id = created.json()["id"]

    visitor.sign_in("hellweg-hochsauerland-employer")
    foreign = visitor.http.get(f"/arbeitgeber/bedarfe/{demand_id}")
    assert foreign.status_code == 404
    assert "Schweißkurs" not in foreign.text and "Nicht gefunden" in foreign.text

    counselor = PortalUser(platform)
    counselor.sign_in("hellweg-hochsauerland-counselor")
    assert counselor.http.get(f"/beratung/bedarfe/{demand_id}").status_code == 404
    counselor.close()

    own = PortalUser(platform)
    own.sign_in("lueneburg-counselor")
    page = own.http.get(f"/beratung/bedarfe/{demand_id}")
    own.close()
    assert page.status_code == 200 and "Schweißkurs für die Werkhalle Lüneburg" in page.text
    with platform.client("matching", EMPLOYER) as api:  # leave no open demand to later tests' offers
        api.post(f"/v1/demands/{demand_id}/close")


def test_a_role_page_of_another_role_is_refused(visitor: PortalUser):
    visitor.sign_in(EMPLOYER)
    assert visitor.http.get("/netzwerk/luecken").status_code == 403
    assert visitor.http.get("/anbieter").status_code == 403


def test_signed_out_visitor_is_sent_to_sign_in_and_back(visitor: PortalUser):
    response = visitor.http.get("/arbeitgeber/bedarfe/neu/bedarf")
    assert response.status_code == 303
    assert response.headers["location"] == "/anmelden?next=/arbeitgeber/bedarfe/neu/bedarf"


def _session_key(visitor: PortalUser) -> str:
    session_id = visitor.http.cookies.get("br_portal_session")
    return "portal:session:" + hashlib.sha256(session_id.encode()).hexdigest()


def test_an_expiring_access_token_is_refreshed(platform: Platform, visitor: PortalUser):
    visitor.sign_in(EMPLOYER)
    store = redis.Redis.from_url(platform.config.redis_url)
    key = _session_key(visitor)
    session = json.loads(store.get(key))
    old_token = session["login"]["access_token"]
    session["login"]["expires_at"] = int(time.time())  # as if its five minutes were up
    store.set(key, json.dumps(session), ex=600)

    assert visitor.http.get("/arbeitgeber").status_code == 200
    refreshed = json.loads(store.get(key))["login"]
    assert refreshed["access_token"] != old_token and refreshed["expires_at"] > time.time() + 60


def test_sign_out_ends_the_session_here_and_at_the_issuer(platform: Platform, visitor: PortalUser):
    visitor.sign_in(EMPLOYER)
    key = _session_key(visitor)
    token = visitor.csrf("/arbeitgeber/bedarfe/neu/bedarf")
    out = visitor.http.post("/abmelden", data={"csrf_token": token})
    assert out.status_code == 303 and "/protocol/openid-connect/logout" in out.headers["location"]
    assert redis.Redis.from_url(platform.config.redis_url).get(key) is None
    assert visitor.http.get("/arbeitgeber").status_code == 303  # signed out here

    confirm = visitor._follow(out)  # the issuer asks (German page), the visitor confirms
    assert "Abmelden" in confirm.text
    form = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', confirm.text))
    action = re.search(r'<form[^>]*action="([^"]+)"', confirm.text).group(1)
    done = visitor._follow(visitor.http.post(httpx.URL(str(confirm.url)).join(action), data={**form, "logout": "yes"}))
    assert done.url.path == "/abgemeldet" and "Sie sind abgemeldet" in done.text

    again = visitor._follow(visitor.http.get("/anmelden"))
    assert "Bei Bildungsraum anmelden" in again.text  # the issuer's session is gone too: asked again
