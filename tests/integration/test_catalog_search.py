"""Search within what the tenant may see: German full text, radius, filters, paging; offer
lifecycle in the catalog (change, withdraw) and the rules on who owns what."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.platform import Platform, offer_body

RUHR = "westfaelisches-ruhrgebiet-provider"
DORTMUND = {"zip": "44137", "city": "Dortmund", "lat": 51.51, "lon": 7.47}
HAMBURG = {"zip": "20095", "city": "Hamburg", "lat": 53.55, "lon": 10.0}


@pytest.fixture(scope="module")
def catalog(platform: Platform) -> dict:
    marker = "sw" + uuid.uuid4().hex[:6]  # a letter first: PostgreSQL reads "308e2b" as a number and a word
    with platform.client("catalog", RUHR) as api:
        provider = api.post("/v1/providers", json={"name": f"Ruhrwerk {marker}", "emails": ["k@ruhr.example"],
                                                   "azav": {"certified": True}}).json()
        other = api.post("/v1/providers", json={"name": f"Zweiter {marker}", "emails": ["z@ruhr.example"]}).json()

        def publish(**overrides) -> dict:
            body = offer_body(provider["id"], visibility={"scope": "home", "networks": []}, **overrides)
            response = api.post("/v1/offers", json=body)
            assert response.status_code == 201, response.text
            return response.json()

        offers = {
            "schweissen": publish(
                title=f"Schweißerprüfung MAG {marker}", description="Metall-Aktivgas-Schweißen nach DIN EN ISO 9606-1.",
                skills=["Schweißtechnik"], price_eur=3050, hours=320,
                funding={"bildungsgutschein": True, "qcg": True, "aufstiegsbafoeg": False},
                sessions=[{"start": "2031-04-05", "end": "2031-04-28", "location": DORTMUND}]),
            "hamburg": publish(
                title=f"Schweißen im Schiffbau {marker}", description="Schweißen für den Schiffbau.",
                skills=["Schweißtechnik"], sessions=[{"start": "2031-04-10", "location": HAMBURG}]),
            "draft": publish(title=f"Schweißen Entwurf {marker}", status="draft"),
            "other_provider": api.post("/v1/offers", json=offer_body(
                other["id"], title=f"Schweißen beim Zweiten {marker}",
                visibility={"scope": "home", "networks": []})).json(),
        }
    return {"marker": marker, "provider": provider, "other": other, "offers": offers}


def _search(platform: Platform, user: str = RUHR, **params) -> dict:
    with platform.client("catalog", user) as api:
        response = api.get("/v1/offers", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(result: dict) -> set[str]:
    return {o["id"] for o in result["items"]}


def test_german_full_text_finds_inflected_words_and_skips_drafts(platform: Platform, catalog: dict) -> None:
    o = catalog["offers"]
    found = _ids(_search(platform, q=f"schweißen {catalog['marker']}"))
    assert {o["schweissen"]["id"], o["hamburg"]["id"], o["other_provider"]["id"]} <= found
    assert o["draft"]["id"] not in found  # drafts are not searchable
    # stemming: the plural finds the singular
    assert o["schweissen"]["id"] in _ids(_search(platform, q=f"Schweißerprüfungen {catalog['marker']}"))


def test_radius_filters_by_session_place(platform: Platform, catalog: dict) -> None:
    o = catalog["offers"]
    near_dortmund = _ids(_search(platform, q=catalog["marker"], lat=51.51, lon=7.47, radius_km=50))
    assert o["schweissen"]["id"] in near_dortmund and o["hamburg"]["id"] not in near_dortmund
    near_hamburg = _ids(_search(platform, q=catalog["marker"], lat=53.55, lon=10.0, radius_km=25))
    assert o["hamburg"]["id"] in near_hamburg and o["schweissen"]["id"] not in near_hamburg


def test_filters_price_start_window_provider_and_paging(platform: Platform, catalog: dict) -> None:
    o, marker = catalog["offers"], catalog["marker"]
    assert o["schweissen"]["id"] not in _ids(_search(platform, q=marker, max_price_eur=1000))
    window = _ids(_search(platform, q=marker, start_from="2031-04-06", start_to="2031-04-30"))
    assert o["hamburg"]["id"] in window and o["schweissen"]["id"] not in window
    by_other = _ids(_search(platform, q=marker, provider_id=catalog["other"]["id"]))
    assert by_other == {o["other_provider"]["id"]}
    assert _ids(_search(platform, q=marker, funding="qcg")) >= {o["schweissen"]["id"]}
    first, second = (_search(platform, q=marker, page=p, page_size=2) for p in (1, 2))
    assert first["total"] == second["total"] == 3
    assert len(first["items"]) == 2 and len(second["items"]) == 1 and not _ids(first) & _ids(second)


def test_home_offers_are_invisible_to_other_networks(platform: Platform, catalog: dict) -> None:
    assert not _search(platform, "lueneburg-employer", q=catalog["marker"])["items"]


def test_change_and_withdraw_an_offer(platform: Platform, catalog: dict) -> None:
    offer = catalog["offers"]["hamburg"]
    body = offer_body(catalog["provider"]["id"], title=f"Unterwasserschweißen {catalog['marker']}",
                      external_id=offer["external_id"], visibility={"scope": "home", "networks": []})
    with platform.client("catalog", RUHR) as api:
        changed = api.put(f"/v1/offers/{offer['id']}", json=body).json()
        assert changed["title"].startswith("Unterwasserschweißen") and changed["version"] == offer["version"] + 1
        withdrawn = api.post(f"/v1/offers/{offer['id']}/withdraw").json()
        assert withdrawn["status"] == "withdrawn"
        assert api.put(f"/v1/offers/{offer['id']}", json=body).status_code == 409
        duplicate = offer_body(catalog["provider"]["id"], external_id=catalog["offers"]["schweissen"]["external_id"])
        assert api.post("/v1/offers", json=duplicate).status_code == 409  # external_id unique per provider
    assert offer["id"] not in _ids(_search(platform, q=catalog["marker"]))
    with platform.client("catalog", "lueneburg-provider") as api:  # not theirs
        assert api.post(f"/v1/offers/{offer['id']}/withdraw").status_code == 404
        foreign = api.post("/v1/offers", json=offer_body(catalog["provider"]["id"]))
        assert foreign.status_code == 404  # another network's provider


def test_a_changed_offer_is_found_by_its_new_format_schedule_and_qualification(platform: Platform,
                                                                              catalog: dict) -> None:
    # with a text, these filters are answered from the text's index too (migration 0022): the words it
    # holds for them must follow the offer
    marker = "fw" + uuid.uuid4().hex[:6]
    before = {"format": "presence", "schedule": "full_time", "qualification": "certificate"}
    after = {"format": "online", "schedule": "evening", "qualification": "language"}
    body = offer_body(catalog["provider"]["id"], title=f"Deutsch für den Beruf {marker}",
                      visibility={"scope": "home", "networks": []}, **before)
    with platform.client("catalog", RUHR) as api:
        offer = api.post("/v1/offers", json=body).json()

    def found(**filters: str) -> bool:
        return offer["id"] in _ids(_search(platform, q=f"Deutsch {marker}", **filters))

    assert all(found(**{key: value}) for key, value in before.items())
    assert not any(found(**{key: value}) for key, value in after.items())
    with platform.client("catalog", RUHR) as api:
        changed = api.put(f"/v1/offers/{offer['id']}", json=body | after | {"sessions": [{"start": "2031-06-01"}]})
        assert changed.status_code == 200, changed.text
    assert all(found(**{key: value}) for key, value in after.items())
    assert found(**after)
    assert not any(found(**{key: value}) for key, value in before.items())


def test_a_text_in_a_start_window_follows_a_session_that_moves(platform: Platform, catalog: dict) -> None:
    # with a text, the window's months are asked of the text's index too (migration 0024): the months
    # an offer holds there must follow its sessions
    marker = "sm" + uuid.uuid4().hex[:6]
    may = {"start_from": "2031-05-01", "start_to": "2031-05-31"}
    july = {"start_from": "2031-07-01", "start_to": "2031-07-31"}
    body = offer_body(catalog["provider"]["id"], title=f"Kranführerschein {marker}",
                      visibility={"scope": "home", "networks": []},
                      sessions=[{"start": "2031-05-12", "end": "2031-05-16", "location": DORTMUND}])
    with platform.client("catalog", RUHR) as api:
        offer = api.post("/v1/offers", json=body).json()

    def found(window: dict, **near: float) -> bool:
        return offer["id"] in _ids(_search(platform, q=f"Kranführerschein {marker}", **window, **near))

    dortmund = {"lat": 51.51, "lon": 7.47, "radius_km": 25}
    assert found(may) and found(may, **dortmund) and not found(july) and not found(july, **dortmund)
    moved = body | {"sessions": [{"start": "2031-07-06", "end": "2031-07-10", "location": DORTMUND}]}
    with platform.client("catalog", RUHR) as api:
        assert api.put(f"/v1/offers/{offer['id']}", json=moved).status_code == 200
    assert found(july) and found(july, **dortmund) and not found(may) and not found(may, **dortmund)


@pytest.fixture(scope="module")
def forklift(platform: Platform) -> dict:
    marker = "gs" + uuid.uuid4().hex[:6]
    with platform.client("catalog", RUHR) as api:
        provider = api.post("/v1/providers", json={"name": f"Stapler-Akademie {marker}", "emails": ["s@a.example"]})
        pid = provider.json()["id"]
        offer = api.post("/v1/offers", json=offer_body(
            pid, title=f"Gabelstapler-Führerschein kompakt {marker}", description="Flurförderzeuge sicher führen.",
            skills=[], hours=24, qualification="certificate", schedule="weekend",
            sessions=[{"start": "2031-05-03", "location": DORTMUND}], visibility={"scope": "all", "networks": []}))
        other = api.post("/v1/offers", json=offer_body(
            pid, title=f"Buchhaltung mit DATEV {marker}", description="Finanzbuchhaltung.", skills=[], hours=200,
            qualification="adaptation", format="online", schedule="evening", sessions=[{"start": "2031-06-01"}],
            visibility={"scope": "all", "networks": []}))
        draft = api.post("/v1/offers", json=offer_body(pid, title=f"Gabelstapler Entwurf {marker}", status="draft",
                                                        visibility={"scope": "all", "networks": []}))
    return {"marker": marker, "provider_id": pid, "offer": offer.json(), "other": other.json(),
            "draft": draft.json()}


@pytest.mark.parametrize("words", ["Staplerschein", "Fuehrerschein", "Fuhrerschein", "Führerscheine",
                                   "Gabelstap", "gabelstapler führerschein"])
def test_german_text_compounds_umlauts_and_prefixes(platform: Platform, forklift: dict, words: str) -> None:
    found = _ids(_search(platform, q=f"{words} {forklift['marker']}"))
    assert forklift["offer"]["id"] in found and forklift["other"]["id"] not in found


def test_a_long_word_is_split_only_when_the_offers_do_not_hold_it_whole(platform: Platform, forklift: dict) -> None:
    marker, apart = "bk" + uuid.uuid4().hex[:6], "bk" + uuid.uuid4().hex[:6]
    with platform.client("catalog", RUHR) as api:
        provider = api.post("/v1/providers", json={"name": f"Fahrschule {marker}", "emails": ["f@a.example"]}).json()
        online = {"format": "online", "sessions": [{"start": "2031-06-01"}]}
        whole, parts = (api.post("/v1/offers", json=offer_body(
            provider["id"], title=title, description="Lehrgang.", skills=[],
            visibility={"scope": "all", "networks": []}, **kind)).json() for title, kind in (
            (f"Berufskraftfahrer Weiterbildung {marker}", {}), (f"Berufs-Kraftfahrer Praxis {marker} {apart}", online)))
    # where an offer holds the word whole, it is not also searched as "Berufs… Kraftfahrer",
    assert _ids(_search(platform, q=f"Berufskraftfahrer {marker}")) == {whole["id"]}
    # not even when the filters leave none of those
    assert _ids(_search(platform, q=f"Berufskraftfahrer {marker}", format="online")) == set()
    # where none does, its two parts find the other
    assert _ids(_search(platform, q=f"Berufskraftfahrer {apart}")) == {parts["id"]}
    # the facets and the total follow the split search too
    split = _search(platform, q=f"Staplerschein {forklift['marker']}", facets=True)
    assert split["total"] == 1 and split["facets"]["format"] == {"presence": 1}


def test_place_as_postcode_or_town_hours_schedule_qualification(platform: Platform, forklift: dict) -> None:
    o, m = forklift, forklift["marker"]
    assert o["offer"]["id"] in _ids(_search(platform, q=m, place="44137", radius_km=25))
    assert o["offer"]["id"] in _ids(_search(platform, q=m, place="Dortmund", radius_km=25))
    assert o["offer"]["id"] not in _ids(_search(platform, q=m, place="Lüneburg", radius_km=100))
    assert o["other"]["id"] in _ids(_search(platform, q=m, place="Lüneburg", radius_km=100))  # online: anywhere
    assert _ids(_search(platform, q=m, min_hours=100)) == {o["other"]["id"]}
    assert _ids(_search(platform, q=m, max_hours=100)) == {o["offer"]["id"]}
    assert _ids(_search(platform, q=m, schedule="weekend")) == {o["offer"]["id"]}
    assert _ids(_search(platform, q=m, qualification="adaptation")) == {o["other"]["id"]}
    with platform.client("catalog", RUHR) as api:
        assert api.get("/v1/offers", params={"place": "Atlantis"}).status_code == 422
        assert api.get("/v1/offers", params={"cursor": "kaputt"}).status_code == 422


def test_facets_and_cursor_paging(platform: Platform, forklift: dict) -> None:
    result = _search(platform, q=forklift["marker"], facets=True, page_size=1)
    assert result["total"] == 2 and result["total_exceeds"] is False
    assert result["facets"]["format"] == {"presence": 1, "online": 1}
    assert result["facets"]["schedule"] == {"weekend": 1, "evening": 1}
    second = _search(platform, q=forklift["marker"], page_size=1, cursor=result["next_cursor"])
    assert len(second["items"]) == 1 and _ids(second) != _ids(result)
    assert second["next_cursor"] is None or not _search(
        platform, q=forklift["marker"], page_size=1, cursor=second["next_cursor"])["items"]


def test_public_network_view(platform: Platform, forklift: dict) -> None:
    with httpx.Client(base_url=platform.config.url("catalog"), timeout=15) as anonymous:
        listing = anonymous.get("/v1/public/lueneburg/offers", params={"q": forklift["marker"]})
        assert listing.status_code == 200 and listing.headers["Cache-Control"].startswith("public")
        assert _ids(listing.json()) == {forklift["offer"]["id"], forklift["other"]["id"]}  # no draft
        assert "visibility" not in listing.json()["items"][0]
        again = anonymous.get("/v1/public/lueneburg/offers", params={"q": forklift["marker"]},
                              headers={"If-None-Match": listing.headers["ETag"]})
        assert again.status_code == 304
        one = anonymous.get(f"/v1/public/lueneburg/offers/{forklift['offer']['id']}")
        assert one.status_code == 200 and one.json()["title"] == forklift["offer"]["title"]
        assert anonymous.get(f"/v1/public/lueneburg/offers/{forklift['draft']['id']}").status_code == 404
        home_only = _search(platform, q="Schweißerprüfung")["items"]  # ruhr's home offers of the module above
        for offer in home_only:
            assert anonymous.get(f"/v1/public/lueneburg/offers/{offer['id']}").status_code == 404
        providers = anonymous.get("/v1/public/westfaelisches-ruhrgebiet/providers").json()["items"]
        mine = next(p for p in providers if p["id"] == forklift["provider_id"])
        assert mine["published_offers"] == 2 and "members" not in mine
        assert anonymous.get("/v1/public/atlantis/offers").status_code == 404
        hammered = {"page": forklift["marker"]}  # one page asked for again and again (others unaffected)
        codes = [anonymous.get("/v1/public/lueneburg/providers", params=hammered).status_code for _ in range(70)]
        assert codes[0] == 200 and 429 in codes
        limited = anonymous.get("/v1/public/lueneburg/providers", params=hammered)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_the_public_directory_lists_the_providers_of_offers_shared_into_the_network(
        platform: Platform, catalog: dict, forklift: dict) -> None:
    """Lüneburg's public list shows the Ruhr provider's offers shared with all networks, so its
    directory lists that provider too, counting the offers Lüneburg shows; a provider whose offers
    stay at home, or are drafts only, is not listed there."""
    with platform.client("catalog", RUHR) as api:
        drafting = api.post("/v1/providers", json={"name": f"Nur Entwürfe {forklift['marker']}",
                                                   "emails": ["e@ruhr.example"]}).json()
        api.post("/v1/offers", json=offer_body(drafting["id"], status="draft",
                                               visibility={"scope": "all", "networks": []}))
    with httpx.Client(base_url=platform.config.url("catalog"), timeout=15) as anonymous:
        listed = {p["id"]: p for p in anonymous.get("/v1/public/lueneburg/providers").json()["items"]}
        shown = anonymous.get("/v1/public/lueneburg/offers", params={"provider_id": forklift["provider_id"]}).json()
    shared_in = listed.get(forklift["provider_id"])
    assert shared_in is not None, "the provider of offers shown in Lüneburg is missing from its directory"
    assert shared_in["published_offers"] == shown["total"] == 2  # the draft not counted
    assert set(shared_in) == {"id", "name", "emails", "address", "azav", "published_offers"}
    assert catalog["provider"]["id"] not in listed  # its offers are the Ruhr network's own
    assert drafting["id"] not in listed
