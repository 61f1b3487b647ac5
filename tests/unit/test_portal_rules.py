"""The portal's plain rules: where a sign-in may lead, what an employer pays, what an offer lacks,
how the search form and the charts read their input."""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from starlette.datastructures import QueryParams

from runtime.places import Place
from services.portal import backends, charts, demand_form, domain, pages_public
from services.portal.kept import Kept
from services.portal.security import safe_next
from services.portal.web import Portal


@pytest.mark.parametrize("target", ["https://evil.example", "//evil.example", "/\\evil.example", "http:/x",
                                    "javascript:alert(1)", "evil.example/x", "/ok\r\nSet-Cookie: x=1", ""])
def test_next_off_site_falls_back_to_the_own_area(target):
    assert safe_next(target) == "/mein-bereich"


def test_next_inside_the_portal_is_kept():
    assert safe_next("/arbeitgeber/bedarfe/neu/zeit?x=1") == "/arbeitgeber/bedarfe/neu/zeit?x=1"


@pytest.mark.parametrize(("employees", "expected"), [(10, 0.0), (49, 0.0), (50, 500.0), (499, 500.0), (500, 750.0)])
def test_employer_cost_after_section_82(employees, expected):
    cost, why = domain.employer_cost(1000, employees, qcg=True)
    assert cost == expected and why


def test_no_funding_means_the_full_price():
    assert domain.employer_cost(1000, 10, qcg=False)[0] == 1000


def test_completeness_names_what_is_missing():
    offer = {"description": "kurz", "skills": ["a"], "hours": 40, "price_eur": 100,
             "sessions": [{"start": (date.today() + timedelta(days=5)).isoformat()}], "funding": {"qcg": True}}
    score, missing = domain.completeness(offer)
    assert score == 57
    assert "Beschreibung mit mindestens 200 Zeichen" in missing and "Dauer in Unterrichtsstunden" not in missing


def _resolve(text):
    return Place("Lüneburg", 53.25, 10.41, "21335") if text.startswith("21335") else None


def test_search_form_errors_name_the_field_and_the_fix():
    form, errors = domain.parse_search(QueryParams("ort=99999&preis_max=viel&beginn_ab=2027-05-01&beginn_bis=2027-01-01"
                                                   "&format=teleport"), _resolve)
    fields = [f for f, _ in errors.items]
    assert fields == ["format", "beginn_bis", "preis_max", "ort"]
    assert "zum Beispiel „21335 Lüneburg“" in errors.for_field("ort")


def test_search_form_to_catalog_query():
    form, errors = domain.parse_search(QueryParams("q=Stapler&ort=21335&umkreis=25&format=presence&foerderung=qcg"
                                                   "&seite=2"), _resolve)
    assert not errors
    params = form.catalog_params(20)
    assert ("lat", 53.25) in params and ("radius_km", 25) in params and ("funding", "qcg") in params
    assert ("page", 2) in params
    assert ("seite", 3) in form.query_string(page=3)


def test_demand_steps_build_the_matching_body():
    draft = {**demand_form.defaults(), "title": "Staplerschein", "participants": "3", "employer_name": "Heide GmbH",
             "employees": "35", "place": "21335 Lüneburg", "skills": "Gabelstapler, Flurförderzeuge",
             "place_resolved": {"name": "Lüneburg", "lat": 53.25, "lon": 10.41, "zip": "21335"},
             "share_contact": ["ja"], "contact_email": "a@b.example"}
    assert demand_form.missing_step(draft) is None
    body = demand_form.demand_body(draft)
    assert body["employer"] == {"name": "Heide GmbH", "city": "Lüneburg", "lat": 53.25, "lon": 10.41,
                                "share_contact": True, "zip": "21335", "employees": 35,
                                "contact": {"email": "a@b.example"}}
    assert body["skills"] == ["Gabelstapler", "Flurförderzeuge"] and body["funding_required"] is False
    assert demand_form.draft_from_demand(body)["place"] == "21335 Lüneburg"


def test_a_skipped_step_is_found_before_submitting():
    assert demand_form.missing_step({**demand_form.defaults(), "title": "x", "participants": "1"}) == "betrieb"


def test_gap_chart_and_csv():
    gaps = charts.gaps_from({"items": [{"skill_cluster": "=HYPERLINK(1)", "district": "Lüneburg", "demand": 5,
                                        "supply": 1}, {"skill_cluster": "Logistik", "district": "Harburg",
                                                       "demand": 2, "supply": 3}]})
    assert [g.unmet for g in gaps] == [4, 0]
    svg = charts.bar_chart(gaps, "Bedarf & Angebot")
    assert 'role="img"' in svg and "Bedarf &amp; Angebot" in svg
    assert "'=HYPERLINK(1);Lüneburg;5;1;4" in charts.gaps_csv(gaps)


def test_json_ld_cannot_close_its_script_element():
    text = domain.offer_jsonld({"id": "x", "title": "</script><script>alert(1)</script>", "sessions": []},
                               "http://p/x", None)
    assert "</script>" not in text


class _SlowIdentity:
    """Identity's public network view as the portal's backends see it: slow, counted, can be down."""

    def __init__(self) -> None:
        self.calls, self.down = 0, False

    async def get(self, service: str, path: str) -> dict:
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.down:
            raise backends.BackendMissing("identity", 503, None)
        if path.endswith("/kein-netz"):
            raise backends.BackendNotFound("identity", 404, None)
        return {"name": f"Netz {self.calls}"}


class _SlowCatalog:
    """The catalog's public provider list as the portal's backends see it: slow, and counted."""

    def __init__(self) -> None:
        self.calls = 0

    async def get(self, service: str, path: str, params: dict) -> dict:
        self.calls += 1
        await asyncio.sleep(0.05)
        return {"items": [{"id": f"p{self.calls}", "name": f"Anbieter {self.calls}"}]}


async def test_many_visitors_at_once_ask_the_catalog_for_the_providers_once():
    catalog = _SlowCatalog()
    portal = SimpleNamespace(backends=catalog, providers=Kept(ttl=60, service="catalog"))
    first = await asyncio.gather(*(pages_public._providers(portal, "netz") for _ in range(16)))
    assert catalog.calls == 1 and all(p == {"p1": {"id": "p1", "name": "Anbieter 1"}} for p in first)

    # A minute later: the kept list is served at once while one request fetches the new one.
    kept = first[0]
    portal.providers.age("netz", 61)
    stale = await asyncio.gather(*(pages_public._providers(portal, "netz") for _ in range(16)))
    assert all(p == kept for p in stale)
    await asyncio.sleep(0.1)
    assert catalog.calls == 2 and set(await pages_public._providers(portal, "netz")) == {"p2"}


async def test_a_network_is_asked_of_identity_once_by_many_visitors_and_a_failed_refresh_keeps_it():
    identity = _SlowIdentity()
    portal = Portal(settings=None, http=None, redis=None, backends=identity, oidc=None, sessions=None,
                    gazetteer=None, templates=None)
    first = await asyncio.gather(*(portal.tenant("netz") for _ in range(16)))
    assert identity.calls == 1 and all(n == {"name": "Netz 1"} for n in first)
    assert await portal.tenant("kein-netz") is None and identity.calls == 2  # no such network: kept as None

    identity.down = True
    portal.networks.age("netz", 61)
    assert await portal.tenant("netz") == {"name": "Netz 1"}  # the kept answer, while one refresh fails
    await asyncio.sleep(0.1)
    identity.down = False
    assert await portal.tenant("netz") == {"name": "Netz 1"}  # served once more while the next refresh runs
    await asyncio.sleep(0.1)
    assert await portal.tenant("netz") == {"name": f"Netz {identity.calls}"} and identity.calls == 4


def test_kept_answers_are_bounded_whatever_addresses_are_typed():
    kept = Kept(ttl=60, service="catalog", limit=3)

    async def visit(key: str) -> str:
        return await kept.get(key, lambda: asyncio.sleep(0, result=key))

    async def many() -> None:
        for n in range(10):
            assert await visit(f"netz-{n}") == f"netz-{n}"

    asyncio.run(many())
    assert list(kept._answers) == ["netz-7", "netz-8", "netz-9"]


async def test_a_page_counts_the_wait_for_a_kept_answer_but_not_a_refresh_it_does_not_wait_for():
    catalog = _SlowCatalog()
    portal = SimpleNamespace(backends=_Timed(catalog), providers=Kept(ttl=60, service="catalog"))
    first_page: list = []
    backends.backend_calls.set(first_page)
    await pages_public._providers(portal, "netz")  # a first visit waits for the fetch: its own time
    assert [service for service, *_ in first_page] == ["catalog"]
    assert first_page[0][2] - first_page[0][1] >= 0.05

    portal.providers.age("netz", 61)
    later_page: list = []
    backends.backend_calls.set(later_page)
    await pages_public._providers(portal, "netz")  # served the kept list while one refresh runs
    await asyncio.sleep(0.1)
    assert catalog.calls == 2 and later_page == []  # the refresh is in no page's Server-Timing


class _Timed:
    """Records each call in the current page's calls, as Backends.call does."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def get(self, service: str, path: str, **kwargs):
        started = time.perf_counter()
        try:
            return await self.inner.get(service, path, **kwargs)
        finally:
            if (calls := backends.backend_calls.get()) is not None:
                calls.append((service, started, time.perf_counter()))


def test_server_timing_counts_calls_side_by_side_once_per_service():
    calls = [("catalog", 0.0, 1.0), ("catalog", 0.5, 1.5), ("catalog", 3.0, 3.5), ("identity", 0.2, 0.4)]
    assert backends.backend_seconds(calls) == {"catalog": 2.0, "identity": pytest.approx(0.2)}
    assert backends.backend_seconds([]) == {}
