"""Demands and matches through the real broker: each hard constraint, each reaction (demand opened,
changed, closed, expired; offer published, changed, made draft, withdrawn, shared, unshared), several
matches of one provider announced once, owners apart, the provider's view with the employer's consent, the gap
report, and a second matching process whose in-memory index follows offers the first one handled.

Each test works at a place of its own (random coordinates), so offers of other tests never fit its
demands."""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid

import asyncpg
import httpx
import pytest

from contracts import DEMAND_CLOSED, DEMANDS_TOPIC, MATCH_FOUND, MATCH_RESTORED, MATCH_RETRACTED, MATCHES_TOPIC
from services.matching.relevance import MAX_MATCHES_PER_DEMAND
from tests.platform import Platform, demand_body, future, offer_body, server_timing, wait_until

PROVIDER, EMPLOYER, EMPLOYER2 = "lueneburg-provider", "lueneburg-employer", "lueneburg-employer2"
COUNSELOR, ADMIN = "lueneburg-counselor", "lueneburg-admin"
AZAV = {"certified": True, "valid_until": future(400), "certifier": "CERTQUA"}
WELDING = {"title": "MAG-Schweißen für Einsteiger mit Prüfung", "skills": ["Schweißen", "MAG"],
           "description": "Grundkurs Metall-Aktivgas-Schweißen an Baustahl mit Schweißerprüfung."}


def _spot() -> tuple[float, float]:
    """A place of this test's own in Germany (far from the fixed places other tests use)."""
    return round(random.uniform(47.6, 54.6), 4), round(random.uniform(6.2, 14.8), 4)


class Place:
    def __init__(self) -> None:
        self.lat, self.lon = _spot()

    def location(self, km_north: float = 0.0) -> dict:
        return {"zip": "21335", "city": "Testort", "lat": round(self.lat + km_north / 111.2, 5), "lon": self.lon}

    def offer(self, provider_id: str, **changes) -> dict:
        sessions = changes.pop("sessions", None) or [{"start": future(40), "end": future(42),
                                                      "location": self.location()}]
        return offer_body(provider_id, sessions=sessions, **changes)

    def demand(self, **changes) -> dict:
        employer = {"name": "Logistik Heide GmbH", "employees": 35, "zip": "21335", "city": "Testort",
                    "lat": self.lat, "lon": self.lon, **changes.pop("employer", {})}
        # 3 km, not the usual 50: the session's other tests leave hundreds of look-alike offers at random
        # places in Germany, and a demand keeps only its two best pairs. With some 500 of them a 10 km
        # circle holds one about every third time (a run failed so); a 3 km circle one time in thirty.
        changes.setdefault("max_distance_km", 3)
        return demand_body(employer=employer, **changes)


@pytest.fixture
def place() -> Place:
    return Place()


@pytest.fixture(scope="module")
def provider(platform: Platform) -> str:
    with platform.client("catalog", PROVIDER) as api:
        made = api.post("/v1/providers", json={"name": "Matching-Akademie", "emails": ["m@akademie.example"]})
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _new_provider(platform: Platform, user: str = PROVIDER) -> str:
    with platform.client("catalog", user) as api:
        made = api.post("/v1/providers", json={"name": f"Akademie {uuid.uuid4().hex[:4]}",
                                               "emails": ["p@akademie.example"], "azav": AZAV})
    assert made.status_code == 201, made.text
    return made.json()["id"]


def _publish(platform: Platform, body: dict, user: str = PROVIDER) -> dict:
    with platform.client("catalog", user) as api:
        made = api.post("/v1/offers", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def _put_offer(platform: Platform, offer: dict, body: dict, user: str = PROVIDER) -> None:
    body = {**body, "external_id": offer["external_id"]}
    with platform.client("catalog", user) as api:
        changed = api.put(f"/v1/offers/{offer['id']}", json=body)
    assert changed.status_code == 200, changed.text


def _open(platform: Platform, body: dict, user: str = EMPLOYER) -> dict:
    with platform.client("matching", user) as api:
        made = api.post("/v1/demands", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def _ranked(platform: Platform, demand_id: str, user: str = EMPLOYER) -> list[str]:
    with platform.client("matching", user) as api:
        return [i["offer_id"] for i in api.get(f"/v1/demands/{demand_id}/offers",
                                               params={"page_size": 100}).json()["items"]]


def _matches(platform: Platform, demand_id: str, user: str = EMPLOYER) -> list[str]:
    with platform.client("matching", user) as api:
        return [i["offer_id"] for i in api.get(f"/v1/demands/{demand_id}/matches").json()["items"]]


def _pair_events(platform: Platform, demand_id: str, offer_id: str) -> list[str]:
    return [t for t, data in platform.events(MATCHES_TOPIC, demand_id) if data["offer"]["id"] == offer_id]


def _matched(platform: Platform, demand: dict, offer: dict, user: str = EMPLOYER) -> None:
    wait_until("the match", lambda: offer["id"] in _matches(platform, demand["id"], user), timeout=60)


# ---- hard constraints: an offer that breaks one is never returned -----------------------------------

BREAKS = {
    "visibility": lambda p, pid: p.offer(pid, visibility={"scope": "home", "networks": []}),
    "format": lambda p, pid: p.offer(pid, format="online", sessions=[{"start": future(40), "location": None}]),
    "start window": lambda p, pid: p.offer(pid, sessions=[{"start": future(200), "location": p.location()}]),
    "distance": lambda p, pid: p.offer(pid, sessions=[{"start": future(40), "location": p.location(km_north=80)}]),
    "price": lambda p, pid: p.offer(pid, price_eur=2000),
    "funding": lambda p, pid: p.offer(pid, funding={"bildungsgutschein": True, "qcg": False,
                                                    "aufstiegsbafoeg": False}),
}


@pytest.mark.parametrize("constraint", sorted(BREAKS))
def test_an_offer_breaking_a_hard_constraint_is_never_returned(platform: Platform, place: Place,
                                                               constraint: str) -> None:
    home = "lueneburg" if constraint != "visibility" else "hellweg-hochsauerland"
    user = f"{home}-provider"
    pid = _new_provider(platform, user)
    funded = {"bildungsgutschein": True, "qcg": True, "aufstiegsbafoeg": False}
    fitting = _publish(platform, place.offer(pid, funding=funded, hours=160,
                                             visibility={"scope": "networks", "networks": ["lueneburg"]}), user)
    breaking_body = BREAKS[constraint](place, pid)
    if constraint != "funding":
        breaking_body["funding"] = funded
    breaking_body["hours"] = 160
    if constraint != "visibility":
        breaking_body["visibility"] = {"scope": "networks", "networks": ["lueneburg"]}
    breaking = _publish(platform, breaking_body, user)
    demand = _open(platform, place.demand(max_price_eur=800, funding_required=True, max_distance_km=30,
                                          start_from=future(10), start_to=future(90)))
    wait_until("the fitting offer ranked", lambda: fitting["id"] in _ranked(platform, demand["id"]))
    wait_until("the breaking offer consumed", lambda: platform.matching_knows(breaking["id"]))
    assert breaking["id"] not in _ranked(platform, demand["id"])
    assert breaking["id"] not in _matches(platform, demand["id"])


def test_online_learning_ignores_distance(platform: Platform, place: Place, provider) -> None:
    far = Place()
    online = _publish(platform, far.offer(provider, format="online",
                                          sessions=[{"start": future(40), "location": None}]))
    presence_far = _publish(platform, far.offer(provider))
    demand = _open(platform, place.demand(formats=["online", "presence"], max_distance_km=25))
    wait_until("the online offer ranked", lambda: online["id"] in _ranked(platform, demand["id"]))
    wait_until("the far offer consumed", lambda: platform.matching_knows(presence_far["id"]))
    assert presence_far["id"] not in _ranked(platform, demand["id"])


def test_a_new_demands_answer_says_where_its_time_went(platform: Platform, place: Place) -> None:
    with platform.client("matching", EMPLOYER) as api:
        made = api.post("/v1/demands", json=place.demand())
    assert made.status_code == 201, made.text
    spans = server_timing(made.headers["server-timing"])
    assert set(spans) == {"encode", "match", "commit"}
    assert spans["encode"] > 0 and spans["match"] > 0 and spans["commit"] >= 0


# ---- reactions --------------------------------------------------------------------------------------

def test_demand_opened_is_matched_at_once_and_closing_retracts(platform: Platform, place: Place, provider) -> None:
    offer = _publish(platform, place.offer(provider))
    probe = _open(platform, place.demand(), COUNSELOR)
    wait_until("the offer consumed", lambda: offer["id"] in _ranked(platform, probe["id"], COUNSELOR))
    demand = _open(platform, place.demand())
    assert offer["id"] in _matches(platform, demand["id"])  # matched in the request itself
    with platform.client("matching", EMPLOYER) as api:
        closed = api.post(f"/v1/demands/{demand['id']}/close").json()
    assert closed["status"] == "closed" and closed["closed_reason"] == "closed"
    assert _matches(platform, demand["id"]) == []
    wait_until("found, then retracted", lambda: _pair_events(platform, demand["id"], offer["id"])
               == [MATCH_FOUND, MATCH_RETRACTED])
    assert [t for t, _ in platform.events(DEMANDS_TOPIC, demand["id"])][-1] == DEMAND_CLOSED


def test_demand_changed_is_matched_again_and_what_no_longer_holds_is_retracted(platform: Platform, place: Place,
                                                                               provider) -> None:
    stapler = _publish(platform, place.offer(provider))
    welder = _publish(platform, place.offer(_new_provider(platform), **WELDING))
    demand = _open(platform, place.demand())
    _matched(platform, demand, stapler)
    # The two offers reach matching as events on partitions of their own: the stapler's match says nothing
    # of whether the welder's has been consumed yet (a CI run failed so).
    wait_until("both browsable", lambda: set(_ranked(platform, demand["id"])) >= {stapler["id"], welder["id"]})
    assert welder["id"] not in _matches(platform, demand["id"])  # feasible, but not what is needed
    welding = place.demand(title="Schweißerprüfung MAG für Monteure", skills=["MAG-Schweißen", "Schweißen"],
                           description="Zwei Monteure sollen MAG-Schweißen an Baustahl lernen.")
    with platform.client("matching", EMPLOYER) as api:
        changed = api.put(f"/v1/demands/{demand['id']}", json=welding)
    assert changed.status_code == 200, changed.text
    assert _matches(platform, demand["id"]) == [welder["id"]]  # re-matched at once
    found_retracted = [MATCH_FOUND, MATCH_RETRACTED]
    wait_until("the events", lambda: _pair_events(platform, demand["id"], stapler["id"]) == found_retracted
               and _pair_events(platform, demand["id"], welder["id"]) == [MATCH_FOUND])


def test_demand_expired_after_its_window_is_closed_and_retracted(platform: Platform, place: Place, provider) -> None:
    offer = _publish(platform, place.offer(provider))
    demand = _open(platform, place.demand())
    _matched(platform, demand, offer)

    async def pass_the_window() -> None:
        conn = await asyncpg.connect(platform.config.service_admin_url("matching"))
        try:
            await conn.execute(
                "UPDATE demands SET start_from = current_date - 30, start_to = current_date - 1 WHERE id = $1",
                uuid.UUID(demand["id"]))
            await conn.execute("NOTIFY matching_expiry")
        finally:
            await conn.close()

    asyncio.run(pass_the_window())

    def expired() -> bool:
        with platform.client("matching", EMPLOYER) as api:
            return api.get(f"/v1/demands/{demand['id']}").json().get("closed_reason") == "expired"

    wait_until("the demand expired", expired, timeout=30)
    assert _matches(platform, demand["id"]) == []
    wait_until("retracted", lambda: _pair_events(platform, demand["id"], offer["id"]) == [MATCH_FOUND, MATCH_RETRACTED])
    closed = [d for t, d in platform.events(DEMANDS_TOPIC, demand["id"]) if t == DEMAND_CLOSED]
    assert closed and closed[-1]["closed_reason"] == "expired"


def test_offer_published_later_is_matched_to_the_open_demand(platform: Platform, place: Place, provider) -> None:
    demand = _open(platform, place.demand())
    offer = _publish(platform, place.offer(provider))
    _matched(platform, demand, offer)
    wait_until("MatchFound", lambda: _pair_events(platform, demand["id"], offer["id"]) == [MATCH_FOUND])


def test_offer_made_draft_is_retracted_and_published_again_restored_and_mailed_once(
        platform: Platform, place: Place, provider) -> None:
    """The match comes back with MatchRestored, not a second MatchFound: notifications would mail it
    now had its retraction cancelled the mail before it went out
    (tests/integration/test_notifications_delivery.py); here the mail went out first, and the
    provider gets no second one."""
    offer = _publish(platform, place.offer(provider))
    demand = _open(platform, place.demand())
    _matched(platform, demand, offer)

    def to_provider() -> list:  # not the employer's offer alerts, which carry the offer too
        return [m for m in platform.mails_for_offer(offer["id"]) if "m@akademie.example" in m["To"]]

    wait_until("the mail", lambda: len(to_provider()) == 1)
    _put_offer(platform, offer, place.offer(provider, status="draft"))
    wait_until("retracted", lambda: offer["id"] not in _matches(platform, demand["id"]))
    _put_offer(platform, offer, place.offer(provider, status="published"))
    _matched(platform, demand, offer)
    wait_until("events", lambda: len(_pair_events(platform, demand["id"], offer["id"])) >= 3)
    assert _pair_events(platform, demand["id"], offer["id"]) == [MATCH_FOUND, MATCH_RETRACTED, MATCH_RESTORED]
    time.sleep(1.5)  # time for a second mail, were one to go
    assert len(to_provider()) == 1


def test_offer_changed_to_another_topic_is_retracted(platform: Platform, place: Place, provider) -> None:
    offer = _publish(platform, place.offer(provider))
    demand = _open(platform, place.demand())
    _matched(platform, demand, offer)
    _put_offer(platform, offer, place.offer(provider, **WELDING))
    wait_until("retracted", lambda: offer["id"] not in _matches(platform, demand["id"]))
    assert offer["id"] in _ranked(platform, demand["id"])  # still feasible: the employer can browse it


def test_offer_shared_later_is_matched_in_the_other_network(platform: Platform, place: Place) -> None:
    pid = _new_provider(platform, "hellweg-hochsauerland-provider")
    body = place.offer(pid, visibility={"scope": "home", "networks": []})
    offer = _publish(platform, body, "hellweg-hochsauerland-provider")
    demand = _open(platform, place.demand())
    _put_offer(platform, offer, {**body, "visibility": {"scope": "networks", "networks": ["lueneburg"]}},
               "hellweg-hochsauerland-provider")
    _matched(platform, demand, offer)


def _ranked_items(platform: Platform, demand_id: str, **params) -> list[dict]:
    with platform.client("matching", EMPLOYER) as api:
        answer = api.get(f"/v1/demands/{demand_id}/offers", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def test_browsing_serves_the_kept_ranking_and_follows_offer_changes(platform: Platform, place: Place,
                                                                   provider) -> None:
    """Nine offers, more than the feedback step takes, so the demand's ranking is kept for browsing
    (its first pages are not ranked anew); an offer published or made draft afterwards shows on the
    next page at once (the kept order holds all nine: without being forgotten it would hide the tenth)."""
    offers = [_publish(platform, place.offer(provider, title=f"Staplerschein Kurs {n}",
                                             price_eur=300 + 10 * n)) for n in range(9)]
    probe = _open(platform, place.demand(), COUNSELOR)
    wait_until("the offers consumed", lambda: len(_ranked(platform, probe["id"], COUNSELOR)) == 9)
    demand = _open(platform, place.demand())
    kept = _ranked_items(platform, demand["id"], page_size=5)  # from the ranking of the demand's own POST
    assert len(kept) == 5 and all(i["reasons"]["place"] == "Testort" for i in kept)
    assert [i["offer_id"] for i in _ranked_items(platform, demand["id"], page=2, page_size=5)] \
        == [i["offer_id"] for i in _ranked_items(platform, demand["id"], page_size=10)[5:]]
    newcomer = _publish(platform, place.offer(provider))
    wait_until("the new offer is browsable", lambda: newcomer["id"] in _ranked(platform, demand["id"]))
    with platform.client("matching", EMPLOYER) as api:  # ranked in full and kept again
        assert api.put(f"/v1/demands/{demand['id']}", json=place.demand()).status_code == 200
    assert len(_ranked(platform, demand["id"])) == 10
    gone = kept[0]["offer_id"]
    _put_offer(platform, next(o for o in offers if o["id"] == gone), place.offer(provider, status="draft"))
    wait_until("the draft leaves the pages", lambda: gone not in _ranked(platform, demand["id"]))
    assert len(_ranked(platform, demand["id"])) == 9


# ---- announcing -------------------------------------------------------------------------------------

def test_a_provider_hears_of_a_demand_once_and_a_demand_has_at_most_its_bound_of_matches(platform: Platform,
                                                                                          place: Place) -> None:
    pid = _new_provider(platform)
    twins = [_publish(platform, place.offer(pid)) for _ in range(2)]
    others = [_publish(platform, place.offer(_new_provider(platform))) for _ in range(MAX_MATCHES_PER_DEMAND + 3)]
    demand = _open(platform, place.demand())
    wait_until("all offers ranked", lambda: len(set(_ranked(platform, demand["id"]))
                                                & {o["id"] for o in twins + others}) == len(twins + others))
    with platform.client("matching", EMPLOYER) as api:  # matched again with all of them in the read model
        api.put(f"/v1/demands/{demand['id']}", json=place.demand())
    matched = _matches(platform, demand["id"])
    assert len(matched) == MAX_MATCHES_PER_DEMAND  # every offer passes the threshold; only the bound stops them
    found = [d["offer"]["provider_id"] for t, d in platform.events(MATCHES_TOPIC, demand["id"]) if t == MATCH_FOUND]
    assert len(found) == len(set(found))  # one MatchFound per provider, whichever of its offers are matches


def test_a_better_offer_arriving_later_takes_the_weakest_matchs_place(platform: Platform, place: Place) -> None:
    """The matches are the demand's best pairs: a provider heard of the demand, then a better offer
    arrived, and the weakest match is retracted for it (the demand keeps its bound)."""
    demand = _open(platform, place.demand())
    far_late = [{"start": future(80), "end": future(82), "location": place.location(km_north=2.5)}]
    weaker = [_publish(platform, place.offer(_new_provider(platform), schedule="evening", sessions=far_late))
              for _ in range(MAX_MATCHES_PER_DEMAND)]
    for offer in weaker:
        _matched(platform, demand, offer)
    better = _publish(platform, place.offer(_new_provider(platform)))  # at the firm, its schedule, earlier
    _matched(platform, demand, better)
    matched = _matches(platform, demand["id"])
    assert len(matched) == MAX_MATCHES_PER_DEMAND and matched[0] == better["id"]
    dropped = [o["id"] for o in weaker if o["id"] not in matched]
    assert len(dropped) == 1
    wait_until("the weakest retracted", lambda: _pair_events(platform, demand["id"], dropped[0])
               == [MATCH_FOUND, MATCH_RETRACTED])
    assert _pair_events(platform, demand["id"], better["id"]) == [MATCH_FOUND]


def test_several_offers_of_one_provider_are_matches_and_announced_once(platform: Platform, place: Place) -> None:
    pid = _new_provider(platform)
    demand = _open(platform, place.demand())
    first = _publish(platform, place.offer(pid))
    _matched(platform, demand, first)
    second = _publish(platform, place.offer(pid, title="Staplerschein kompakt vor Ort"))
    _matched(platform, demand, second)
    assert set(_matches(platform, demand["id"])) == {first["id"], second["id"]}
    wait_until("MatchFound for the first", lambda: _pair_events(platform, demand["id"], first["id"]) == [MATCH_FOUND])
    assert _pair_events(platform, demand["id"], second["id"]) == []  # the provider heard of the demand already

    def view() -> set[str]:
        with platform.client("matching", PROVIDER) as api:
            return {i["offer_id"] for i in api.get("/v1/matched-demands", params={"page_size": 200}).json()["items"]
                    if i["demand"]["id"] == demand["id"]}

    wait_until("both offers in the provider's view", lambda: view() == {first["id"], second["id"]})


def test_one_offer_published_is_matched_to_every_open_demand_it_fits(platform: Platform, place: Place) -> None:
    """Reverse matching writes an offer's matches with many demands as one batch: each demand gets
    the match, MatchFound goes out once per demand whose provider had not heard of it yet, and the
    provider's view shows every pair."""
    pid = _new_provider(platform)
    heard = _open(platform, place.demand())
    earlier = _publish(platform, place.offer(pid))
    _matched(platform, heard, earlier)
    later = {"start_from": future(50), "start_to": future(90)}  # `earlier` (day 40) does not fit these
    fresh = [_open(platform, place.demand(**later), user) for user in (EMPLOYER, EMPLOYER, EMPLOYER2)]
    offer = _publish(platform, place.offer(pid, title="Staplerschein kompakt vor Ort", sessions=[
        {"start": future(60), "end": future(62), "location": place.location()}]))
    for demand in [heard, *fresh]:
        _matched(platform, demand, offer, EMPLOYER2 if demand is fresh[2] else EMPLOYER)
    for demand in fresh:
        wait_until("MatchFound", lambda d=demand: _pair_events(platform, d["id"], offer["id"]) == [MATCH_FOUND])
    assert _pair_events(platform, heard["id"], offer["id"]) == []  # its provider heard of it through `earlier`

    def view() -> set[tuple[str, str]]:
        with platform.client("matching", PROVIDER) as api:
            return {(i["demand"]["id"], i["offer_id"])
                    for i in api.get("/v1/matched-demands", params={"page_size": 200}).json()["items"]}

    wait_until("every pair in the provider's view",
               lambda: {(d["id"], offer["id"]) for d in [heard, *fresh]} <= view())


# ---- owners -----------------------------------------------------------------------------------------

def test_an_employer_reaches_only_its_firms_demands(platform: Platform, place: Place) -> None:
    demand = _open(platform, place.demand())
    with platform.client("matching", EMPLOYER2) as api:
        for path in ("", "/matches", "/offers"):
            assert api.get(f"/v1/demands/{demand['id']}{path}").status_code == 404
        assert api.put(f"/v1/demands/{demand['id']}", json=place.demand()).status_code == 404
        assert api.post(f"/v1/demands/{demand['id']}/close").status_code == 404
        assert demand["id"] not in {d["id"] for d in api.get("/v1/demands").json()["items"]}
        assert api.post("/v1/demands", json=place.demand(firm="lueneburg-firma-1")).status_code == 403
    with platform.client("matching", EMPLOYER) as api:
        assert demand["id"] in {d["id"] for d in api.get("/v1/demands").json()["items"]}
    with platform.client("matching", COUNSELOR) as api:
        assert api.get(f"/v1/demands/{demand['id']}").status_code == 200


def test_a_counselor_records_demand_on_behalf_of_a_firm(platform: Platform, place: Place) -> None:
    recorded = _open(platform, place.demand(firm="lueneburg-firma-2"), COUNSELOR)
    assert recorded["owner"] == "lueneburg-firma-2"
    with platform.client("matching", EMPLOYER2) as api:
        assert api.get(f"/v1/demands/{recorded['id']}").status_code == 200
    with platform.client("matching", EMPLOYER) as api:
        assert api.get(f"/v1/demands/{recorded['id']}").status_code == 404


# ---- the provider's view ----------------------------------------------------------------------------

def test_the_provider_sees_its_matched_demands_and_the_contact_only_with_consent(platform: Platform,
                                                                                place: Place) -> None:
    pid = _new_provider(platform)
    offer = _publish(platform, place.offer(pid))
    contact = {"name": "Frau Heide", "email": "lager@heide.example"}
    shared = _open(platform, place.demand(employer={"contact": contact, "share_contact": True}))
    private = _open(platform, place.demand(employer={"contact": contact, "share_contact": False}))
    _matched(platform, shared, offer)
    _matched(platform, private, offer)

    def view() -> dict:
        with platform.client("matching", PROVIDER) as api:
            items = api.get("/v1/matched-demands", params={"page_size": 200}).json()["items"]
            return {i["demand"]["id"]: i for i in items if i["offer_id"] == offer["id"]}

    items = wait_until("both in the provider's view", lambda: (v := view()) and len(v) == 2 and v, timeout=60)
    assert items[shared["id"]]["employer"]["contact"] | contact == items[shared["id"]]["employer"]["contact"]
    assert items[private["id"]]["employer"]["contact"] is None
    assert items[shared["id"]]["demand"]["title"] == shared["title"] and items[shared["id"]]["reasons"]["skills"]
    with platform.client("matching", "lueneburg-provider2") as api:  # another provider of the network
        assert offer["id"] not in {i["offer_id"] for i in api.get("/v1/matched-demands").json()["items"]}
    with platform.client("matching", EMPLOYER) as api:
        api.post(f"/v1/demands/{shared['id']}/close")
    assert shared["id"] not in view()


# ---- unmet demand -----------------------------------------------------------------------------------

def test_gaps_per_skill_cluster_and_district_as_json_and_csv(platform: Platform) -> None:
    lueneburg = {"name": "Pflegeheim Am Kurpark", "employees": 80, "zip": "21335", "city": "Lüneburg",
                 "lat": 53.2464, "lon": 10.4115}
    _open(platform, demand_body(employer=lueneburg, title="Pflegeassistenz für Hilfskräfte",
                                skills=["Pflegeassistenz"], participants=4,
                                description="Vier ungelernte Kräfte sollen zur Pflegeassistenz qualifiziert werden."),
          COUNSELOR)
    with platform.client("matching", ADMIN) as api:
        body = api.get("/v1/insights/gaps", params={"from": future(-1), "to": future(0)}).json()
        csv = api.get("/v1/insights/gaps", params={"from": future(-1), "to": future(0)},
                      headers={"Accept": "text/csv"})
    row = next(i for i in body["items"] if i["district"] == "Lüneburg" and "Pflege" in i["skill_cluster"])
    assert row["demands"] >= 1 and row["participants"] >= 4 and row["demands_without_good_match"] >= 1
    assert {"offers_available", "offers_in_district", "offers_remote"} <= set(row)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.startswith("\ufeffThemenfeld;Region;Bedarfe;Teilnehmende;Ohne passendes Angebot;Angebote")
    with platform.client("matching", EMPLOYER) as api:
        assert api.get("/v1/insights/gaps").status_code == 403


# ---- two matching processes -------------------------------------------------------------------------

def test_a_second_matching_process_ranks_with_offers_the_first_one_handled(platform: Platform, place: Place,
                                                                          provider) -> None:
    """The second process serves HTTP only (its own in-memory index, no consumer): every vector it
    ranks with came from PostgreSQL, written by the first process's consumer."""
    stack = platform.stack
    port = stack.config.ports["matching"] + 57
    env = {**stack.service_env("matching"), "BR_HTTP_PORT": str(port)}
    stack._spawn("matching-replica", [sys.executable, "-m", "services.matching", "api"], env)
    second = f"http://{stack.config.host}:{port}"
    try:
        wait_until("the second process ready", lambda: _ready(second), timeout=60)
        offer = _publish(platform, place.offer(provider, **WELDING))  # feasible, not what is needed
        demand = _open(platform, place.demand())

        def scores(base: str) -> float | None:
            headers = {"Authorization": f"Bearer {platform.token(EMPLOYER)}"}
            items = httpx.get(f"{base}/v1/demands/{demand['id']}/offers", headers=headers, timeout=15).json()["items"]
            return next((i["score"] for i in items if i["offer_id"] == offer["id"]), None)

        before = wait_until("the welding offer ranked by the second process", lambda: scores(second))
        assert before == scores(platform.config.url("matching"))
        _put_offer(platform, offer, place.offer(provider))  # now the forklift course: re-encoded by the first
        after = wait_until("the new vector in the second process's index",
                           lambda: (s := scores(second)) is not None and s > before + 0.2 and s)
        assert after == scores(platform.config.url("matching"))
        # the same text, its course moved 30 km away (outside the demand's 3 km): no new vector, only
        # new facts for the hard constraints, which the second process's index must learn as well
        moved = [{"start": future(40), "end": future(42), "location": place.location(km_north=30)}]
        _put_offer(platform, offer, place.offer(provider, sessions=moved))
        wait_until("the moved offer gone from the second process's ranking", lambda: scores(second) is None)
        assert scores(platform.config.url("matching")) is None
    finally:
        stack.stop("matching-replica")


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
