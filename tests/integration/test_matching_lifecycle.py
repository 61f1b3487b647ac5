"""Matches follow their offers and demands: a change that breaks a hard constraint retracts the
match (MatchRetracted), a change that mends it restores it (MatchRestored; one mail), a
withdrawn or no longer shared offer is retracted, a closed demand takes no new matches."""

from __future__ import annotations

import time

import pytest

from contracts import MATCH_FOUND, MATCH_RESTORED, MATCH_RETRACTED, MATCHES_TOPIC
from tests.platform import Platform, alone_at, demand_body, lonely_place, offer_body, wait_until

PROVIDER = "hellweg-hochsauerland-provider"
EMPLOYER = "lueneburg-employer"


def _match_ids(platform: Platform, demand_id: str) -> set[str]:
    with platform.client("matching", EMPLOYER) as api:
        return {m["offer_id"] for m in api.get(f"/v1/demands/{demand_id}/matches").json()["items"]}


def _events(platform: Platform, demand_id: str) -> list[tuple[str, str]]:
    """(event type, offer id) of every match event of the demand, in topic order."""
    return [(event_type, data["offer"]["id"]) for event_type, data in platform.events(MATCHES_TOPIC, demand_id)]


@pytest.fixture
def pair(platform: Platform) -> dict:
    """A pair at a place of its own: look-alikes of earlier tests would take a freed place."""
    offer_at, demand_at = alone_at(lonely_place())
    with platform.client("catalog", PROVIDER) as api:
        provider = api.post("/v1/providers", json={"name": "Lifecycle", "emails": ["l@c.example"]}).json()
        offer = api.post("/v1/offers", json=offer_body(provider["id"], **offer_at)).json()
    with platform.client("matching", EMPLOYER) as api:
        demand = api.post("/v1/demands", json=demand_body(max_price_eur=500, **demand_at)).json()
    wait_until("the first match", lambda: offer["id"] in _match_ids(platform, demand["id"]))
    return {"provider": provider, "offer": offer, "demand": demand, "offer_at": offer_at, "demand_at": demand_at}


def _put(platform: Platform, pair: dict, **changes) -> None:
    body = offer_body(pair["provider"]["id"], external_id=pair["offer"]["external_id"], **(pair["offer_at"] | changes))
    with platform.client("catalog", PROVIDER) as api:
        assert api.put(f"/v1/offers/{pair['offer']['id']}", json=body).status_code == 200


def test_breaking_and_mending_a_constraint_retracts_and_restores(platform: Platform, pair: dict) -> None:
    offer_id, demand_id = pair["offer"]["id"], pair["demand"]["id"]
    _put(platform, pair, price_eur=900)  # above the demand's ceiling of 500
    wait_until("the match retracted", lambda: offer_id not in _match_ids(platform, demand_id))
    _put(platform, pair, price_eur=450)
    wait_until("the match restored", lambda: offer_id in _match_ids(platform, demand_id))
    def pair_events() -> list[str]:
        return [event_type for event_type, offer in _events(platform, demand_id) if offer == offer_id]

    wait_until("the three events", lambda: len(pair_events()) >= 3)
    # announced once, restored as it holds again; the provider is mailed once whether its first mail
    # went out before the retraction or the retraction cancelled it
    assert pair_events() == [MATCH_FOUND, MATCH_RETRACTED, MATCH_RESTORED]
    def to_provider() -> list:  # not the employer's offer alerts, which carry the offer too
        return [m for m in platform.mails_for_offer(offer_id) if "l@c.example" in m["To"]]

    wait_until("the mail", lambda: len(to_provider()) == 1)
    time.sleep(1.5)  # time for a second mail, were one to go
    assert len(to_provider()) == 1


def test_withdrawn_offer_is_retracted(platform: Platform, pair: dict) -> None:
    with platform.client("catalog", PROVIDER) as api:
        assert api.post(f"/v1/offers/{pair['offer']['id']}/withdraw").status_code == 200
    wait_until("the match retracted", lambda: pair["offer"]["id"] not in _match_ids(platform, pair["demand"]["id"]))


def test_offer_no_longer_shared_is_retracted(platform: Platform, pair: dict) -> None:
    _put(platform, pair, visibility={"scope": "home", "networks": []})
    wait_until("the match retracted", lambda: pair["offer"]["id"] not in _match_ids(platform, pair["demand"]["id"]))
    assert (MATCH_RETRACTED, pair["offer"]["id"]) in _events(platform, pair["demand"]["id"])


def test_closed_demand_takes_no_new_matches_and_is_private(platform: Platform, pair: dict) -> None:
    demand_id = pair["demand"]["id"]
    with platform.client("matching", EMPLOYER) as api:
        closed = api.post(f"/v1/demands/{demand_id}/close").json()
        assert closed["status"] == "closed" and api.get(f"/v1/demands/{demand_id}").json()["status"] == "closed"
    with platform.client("catalog", PROVIDER) as api:
        later = api.post("/v1/offers", json=offer_body(pair["provider"]["id"], **pair["offer_at"])).json()
    with platform.client("matching", "lueneburg-counselor") as api:  # a probe demand shows the offer was consumed
        probe = api.post("/v1/demands", json=demand_body(**pair["demand_at"])).json()
        def ranked() -> set[str]:  # one match per provider: the later offer shows in the ranking
            listed = api.get(f"/v1/demands/{probe['id']}/offers", params={"page_size": 100}).json()["items"]
            return {m["offer_id"] for m in listed}

        wait_until("the later offer consumed", lambda: later["id"] in ranked())
    assert later["id"] not in _match_ids(platform, demand_id)
    with platform.client("matching", "hellweg-hochsauerland-employer") as api:
        assert api.get(f"/v1/demands/{demand_id}").status_code == 404
        assert api.get(f"/v1/demands/{demand_id}/matches").status_code == 404
