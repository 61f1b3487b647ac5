"""Owners inside a network: a provider user acts only for its providers (membership, the token's
``providers`` claim, members set by the network admin), enforced in code and by row-level
security; the full offer model and its rules; optimistic concurrency; every status change is an
event; network-level sharing defaults."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest

from contracts import OFFER_UPDATED, OFFER_WITHDRAWN, OFFERS_TOPIC, PROVIDERS_TOPIC
from tests.platform import Platform, future, offer_body, wait_until

TENANT = "hellweg-hochsauerland"
ALICE = f"{TENANT}-provider"
ADMIN = f"{TENANT}-admin"
AZAV = {"certified": True, "valid_until": future(400), "certifier": "CERTQUA"}


def _bob(platform: Platform, **claims) -> httpx.Client:
    """A second provider user of the same network (own subject), optionally with a providers claim."""
    token = platform.mint(ALICE, sub="bob-" + claims.pop("suffix", "0"), preferred_username="bob", **claims)
    return httpx.Client(base_url=platform.config.url("catalog"), headers={"Authorization": f"Bearer {token}"},
                        timeout=15)


@pytest.fixture(scope="module")
def alice(platform: Platform) -> dict:
    with platform.client("catalog", ALICE) as api:
        provider = api.post("/v1/providers", json={
            "name": "Sauerland-Kolleg", "emails": ["kurse@sauerland-kolleg.example"],
            "address": {"street": "Ruhrstraße 1", "zip": "59821", "city": "Arnsberg"}, "azav": AZAV}).json()
        offer = api.post("/v1/offers", json=offer_body(provider["id"], visibility={"scope": "home", "networks": []}))
        draft = api.post("/v1/offers", json=offer_body(provider["id"], status="draft"))
    return {"provider": provider, "offer": offer.json(), "draft": draft.json()}


def test_creator_becomes_member_and_the_event_names_the_members(platform: Platform, alice: dict) -> None:
    provider = alice["provider"]
    assert len(provider["members"]) == 1
    registered = wait_until("provider event", lambda: platform.events(PROVIDERS_TOPIC, provider["id"]))
    assert registered[0][1]["members"] == provider["members"]
    with platform.client("catalog", ALICE) as api:
        assert provider["id"] in [p["id"] for p in api.get("/v1/providers", params={"mine": True}).json()["items"]]
    with _bob(platform, suffix="mine") as bob:
        assert bob.get("/v1/providers", params={"mine": True}).json()["items"] == []


def test_another_provider_user_cannot_touch_what_is_not_theirs(platform: Platform, alice: dict) -> None:
    provider, offer, draft = alice["provider"], alice["offer"], alice["draft"]
    with _bob(platform) as bob:
        assert bob.get(f"/v1/offers/{offer['id']}").status_code == 200  # published: bob may read it
        body = offer_body(provider["id"], external_id=offer["external_id"], title="Gekapert")
        assert bob.put(f"/v1/offers/{offer['id']}", json=body).status_code == 403
        assert bob.post(f"/v1/offers/{offer['id']}/withdraw").status_code == 403
        assert bob.get(f"/v1/offers/{draft['id']}").status_code == 404  # a draft is not his to see
        assert bob.post(f"/v1/offers/{draft['id']}/withdraw").status_code == 404
        assert bob.post("/v1/offers", json=offer_body(provider["id"])).status_code == 403
        changed = dict(name="Gekapert", emails=["boese@example.org"])
        assert bob.put(f"/v1/providers/{provider['id']}", json=changed).status_code == 403
        # bob's own provider: he may not move his offer onto alice's provider either
        own = bob.post("/v1/providers", json={"name": "Bobs Schule", "emails": ["b@b.example"]}).json()
        mine = bob.post("/v1/offers", json=offer_body(own["id"])).json()
        moved = offer_body(provider["id"], external_id=mine["external_id"])
        assert bob.put(f"/v1/offers/{mine['id']}", json=moved).status_code == 403
        assert bob.put(f"/v1/providers/{provider['id']}/members", json={"members": ["bob-0"]}).status_code == 403
    with platform.client("catalog", ALICE) as api:
        assert api.get(f"/v1/offers/{offer['id']}").json()["title"] == offer["title"]  # unchanged
        assert api.get(f"/v1/offers/{mine['id']}").json()["provider_id"] == own["id"]


def test_claim_and_membership_set_by_the_network_admin_grant(platform: Platform, alice: dict) -> None:
    provider, offer = alice["provider"], alice["offer"]
    body = offer_body(provider["id"], external_id=offer["external_id"],
                      visibility={"scope": "home", "networks": []})
    with _bob(platform, suffix="claim", providers=[provider["id"]]) as bob:  # the token grants
        assert bob.put(f"/v1/offers/{offer['id']}", json=body | {"title": "Per Claim"}).status_code == 200
    with _bob(platform, suffix="member") as bob:
        assert bob.put(f"/v1/offers/{offer['id']}", json=body).status_code == 403
        with platform.client("catalog", ADMIN) as admin:
            members = [*provider["members"], "bob-member"]
            answer = admin.put(f"/v1/providers/{provider['id']}/members", json={"members": members})
            assert answer.status_code == 200 and answer.json()["members"] == sorted(members)
        assert bob.put(f"/v1/offers/{offer['id']}", json=body | {"title": "Als Mitglied"}).status_code == 200
        with platform.client("catalog", ADMIN) as admin:
            admin.put(f"/v1/providers/{provider['id']}/members", json={"members": provider["members"]})
        assert bob.put(f"/v1/offers/{offer['id']}", json=body).status_code == 403
    event = wait_until("members event", lambda: [
        e for t, e in platform.events(PROVIDERS_TOPIC, provider["id"]) if "bob-member" in e["members"]])
    assert event


async def _as_the_app(dsn: str, acting: str | None, *statements: str) -> str:
    """The statements in one transaction as the service's role in the test's network, acting for
    ``acting`` (app.acting_providers; None: unsaid), rolled back; the last one's status."""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SET LOCAL ROLE br_catalog_app")
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", TENANT)
            if acting is not None:
                await conn.execute("SELECT set_config('app.acting_providers', $1, true)", acting)
            for statement in statements:
                answer = await conn.execute(statement)
            return answer
        finally:
            await tx.rollback()
    finally:
        await conn.close()


def test_row_level_security_refuses_writes_for_other_providers(platform: Platform, alice: dict) -> None:
    """Even a query that forgets the ownership check cannot change another provider's offer."""
    dsn = platform.config.service_admin_url("catalog")
    touch = f"UPDATE offers SET title = title WHERE id = '{uuid.UUID(alice['offer']['id'])}'"
    assert asyncio.run(_as_the_app(dsn, str(uuid.uuid4()), touch)) == "UPDATE 0"
    assert asyncio.run(_as_the_app(dsn, None, touch)) == "UPDATE 0"  # nobody said whom it acts for: nothing
    assert asyncio.run(_as_the_app(dsn, alice["provider"]["id"], touch)) == "UPDATE 1"


def test_the_database_refuses_a_sharing_change_but_by_a_network_wide_role(platform: Platform, alice: dict) -> None:
    """Even a write path that forgets the route's role check cannot change the network's default
    shares for a provider's user; a network-wide role can, and an offer write still reads the row."""
    dsn = platform.config.service_admin_url("catalog")
    row = f"INSERT INTO network_sharing (tenant_id) VALUES ('{TENANT}') ON CONFLICT DO NOTHING"
    share = "UPDATE network_sharing SET networks = '{hellweg-hochsauerland}'"
    for acting in (alice["provider"]["id"], None, ""):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="network-wide role"):
            asyncio.run(_as_the_app(dsn, acting, row, share))
    assert asyncio.run(_as_the_app(dsn, "*", row, share)) == "UPDATE 1"
    held = "SELECT networks FROM network_sharing WHERE tenant_id = current_setting('app.tenant_id') FOR SHARE"
    assert asyncio.run(_as_the_app(dsn, alice["provider"]["id"], row, held)) == "SELECT 1"


def test_qcg_needs_azav_and_more_than_120_hours(platform: Platform, alice: dict) -> None:
    qcg = {"bildungsgutschein": True, "qcg": True, "aufstiegsbafoeg": False}
    with platform.client("catalog", ALICE) as api:
        short = api.post("/v1/offers", json=offer_body(alice["provider"]["id"], funding=qcg, hours=120))
        assert short.status_code == 422 and "120" in short.json()["detail"]
        assert short.json()["errors"][0]["field"] == "body.funding.qcg"
        long = api.post("/v1/offers", json=offer_body(
            alice["provider"]["id"], funding=qcg, hours=480, measure_number="962/0815/2026",
            occupation_codes=["25212"], esco_skills=["http://data.europa.eu/esco/skill/" + str(uuid.uuid4())]))
        assert long.status_code == 201, long.text
        assert long.json()["measure_number"] == "962/0815/2026" and long.json()["occupation_codes"] == ["25212"]
        uncertified = api.post("/v1/providers", json={"name": "Ohne AZAV", "emails": ["o@a.example"]}).json()
        refused = api.post("/v1/offers", json=offer_body(uncertified["id"], funding=qcg, hours=480))
        assert refused.status_code == 422 and "AZAV" in refused.json()["detail"]
        expired = api.post("/v1/providers", json={"name": "Abgelaufen", "emails": ["x@a.example"],
                                                  "azav": {"certified": True, "valid_until": "2020-01-01"}}).json()
        assert api.post("/v1/offers", json=offer_body(expired["id"], funding=qcg, hours=480)).status_code == 422


QCG = {"bildungsgutschein": True, "qcg": True, "aufstiegsbafoeg": False}


def test_qcg_needs_azav_until_the_last_session_starts(platform: Platform, alice: dict) -> None:
    with platform.client("catalog", ALICE) as api:
        provider = api.post("/v1/providers", json={"name": "Kurz zertifiziert", "emails": ["k@z.example"],
                                                   "azav": {"certified": True, "valid_until": future(100)}}).json()
        later = [{"start": future(30), "end": future(31)}, {"start": future(200), "end": future(201)}]
        refused = api.post("/v1/offers", json=offer_body(provider["id"], funding=QCG, hours=480, format="online",
                                                         sessions=later))
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "body.funding.qcg"
        assert future(200) in refused.json()["detail"] and future(100) in refused.json()["detail"]
        within = api.post("/v1/offers", json=offer_body(provider["id"], funding=QCG, hours=480, format="online",
                                                        sessions=later[:1]))
        assert within.status_code == 201, within.text


def _qcg_of(api: httpx.Client, offer: dict) -> tuple[bool, int]:
    now = api.get(f"/v1/offers/{offer['id']}").json()
    return now["funding"]["qcg"], now["version"]


def test_an_offer_loses_qcg_with_its_providers_azav_everywhere(platform: Platform) -> None:
    """A provider whose certification now ends before its offers start: they lose qcg in that very
    change, search no longer finds them as fundable, and matching retracts them from a demand that
    requires funding (through the broker). Another provider's offers keep theirs."""
    from tests.platform import alone_at, demand_body, lonely_place

    offer_at, demand_at = alone_at(lonely_place())
    azav = {"certified": True, "valid_until": future(400), "certifier": "CERTQUA"}
    with platform.client("catalog", ALICE) as api:
        provider = api.post("/v1/providers", json={"name": "Förderschule Hellweg", "emails": ["f@h.example"],
                                                   "azav": azav}).json()
        other = api.post("/v1/providers", json={"name": "Zertifiziert bleibt", "emails": ["z@b.example"],
                                                "azav": azav}).json()
        funded = api.post("/v1/offers", json=offer_body(provider["id"], title="Staplerschein Fördertest",
                                                        funding=QCG, hours=480, **offer_at)).json()
        draft = api.post("/v1/offers", json=offer_body(provider["id"], funding=QCG, hours=480,
                                                       status="draft")).json()
        kept = api.post("/v1/offers", json=offer_body(other["id"], funding=QCG, hours=480)).json()
    with platform.client("matching", "lueneburg-employer") as api:
        demand = api.post("/v1/demands", json=demand_body(funding_required=True, **demand_at)).json()

    def matched() -> set[str]:
        with platform.client("matching", "lueneburg-employer") as api:
            return {m["offer_id"] for m in api.get(f"/v1/demands/{demand['id']}/matches").json()["items"]}

    def fundable() -> set[str]:
        with platform.client("catalog", "lueneburg-employer") as api:
            found = api.get("/v1/offers", params={"q": "Fördertest", "funding": "qcg"}).json()["items"]
        return {o["id"] for o in found}

    wait_until("the match", lambda: funded["id"] in matched())
    assert funded["id"] in fundable()
    with platform.client("catalog", ALICE) as api:
        changed = api.put(f"/v1/providers/{provider['id']}", json={
            "name": provider["name"], "emails": provider["emails"],
            "azav": azav | {"valid_until": future(20)}})  # before the sessions, which start in 40 days
        assert changed.status_code == 200, changed.text
        assert _qcg_of(api, funded) == (False, funded["version"] + 1)
        assert _qcg_of(api, draft) == (False, draft["version"] + 1)
        assert _qcg_of(api, kept) == (True, kept["version"])
    updates = [data for kind, data in platform.events(OFFERS_TOPIC, funded["id"]) if kind == OFFER_UPDATED]
    assert updates and updates[-1]["funding"]["qcg"] is False
    assert platform.events(OFFERS_TOPIC, draft["id"]) == []  # a draft's change is nobody else's business
    assert funded["id"] not in fundable()
    wait_until("the match retracted", lambda: funded["id"] not in matched())
    with platform.client("catalog", ADMIN) as admin:
        entry = next(e for e in admin.get("/v1/audit", params={"page_size": 20}).json()["items"]
                     if e["action"] == "offers.qcg_revoked" and e["target"] == provider["id"])
    assert sorted(entry["details"]["offers"]) == sorted([funded["id"], draft["id"]]) and entry["actor"] == ALICE


@pytest.mark.parametrize("ends", ["2026-01-01", "before the session"])
def test_a_certificate_that_runs_out_takes_qcg_from_its_offers(platform: Platform, ends: str) -> None:
    """Time's part of the rule, and a net under it: the catalog's sweep (woken here by NOTIFY, as an
    operator may). "before the session": valid today but ending before the offer's session starts,
    as for an offer written before the rule asked for its last session."""
    ends = future(20) if ends == "before the session" else ends  # the session starts in 40 days
    with platform.client("catalog", ALICE) as api:
        provider = api.post("/v1/providers", json={"name": "Läuft ab", "emails": ["l@a.example"], "azav": {
            "certified": True, "valid_until": future(400)}}).json()
        funded = api.post("/v1/offers", json=offer_body(provider["id"], funding=QCG, hours=480)).json()

    async def run_out() -> None:  # the certificate's end moved, behind the API's back, as time would
        conn = await asyncpg.connect(platform.config.service_admin_url("catalog"))
        try:
            await conn.execute("UPDATE providers SET azav = jsonb_set(azav, '{valid_until}', to_jsonb($2::text))"
                               " WHERE id = $1", uuid.UUID(provider["id"]), ends)
            await conn.execute("NOTIFY catalog_qcg")
        finally:
            await conn.close()

    asyncio.run(run_out())
    with platform.client("catalog", ALICE) as api:
        wait_until("qcg taken", lambda: _qcg_of(api, funded) == (False, funded["version"] + 1))
    updates = wait_until("the update", lambda: [d for k, d in platform.events(OFFERS_TOPIC, funded["id"])
                                                if k == OFFER_UPDATED])
    assert updates[-1]["funding"]["qcg"] is False and updates[-1]["status"] == "published"
    with platform.client("catalog", ADMIN) as admin:
        entry = next(e for e in admin.get("/v1/audit", params={"page_size": 20}).json()["items"]
                     if e["action"] == "offers.qcg_revoked" and e["target"] == provider["id"])
    assert entry["details"]["offers"] == [funded["id"]] and entry["actor"] == "Bildungsraum"


def test_places_without_coordinates_are_found_offline(platform: Platform, alice: dict) -> None:
    sessions = [{"start": future(30), "location": {"zip": "59821", "city": "Arnsberg"}},
                {"start": future(60), "location": {"zip": "00000", "city": "Meschede"}}]
    with platform.client("catalog", ALICE) as api:
        offer = api.post("/v1/offers", json=offer_body(alice["provider"]["id"], sessions=sessions))
        assert offer.status_code == 201, offer.text
        arnsberg, meschede = (s["location"] for s in offer.json()["sessions"])
        assert abs(arnsberg["lat"] - 51.4) < 0.1 and abs(arnsberg["lon"] - 8.06) < 0.15
        assert abs(meschede["lat"] - 51.35) < 0.1 and abs(meschede["lon"] - 8.28) < 0.15
        nowhere = [{"start": future(30), "location": {"zip": "00000", "city": "Nirgendwo"}}]
        refused = api.post("/v1/offers", json=offer_body(alice["provider"]["id"], sessions=nowhere))
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "body.sessions.0.location"


def test_stale_write_gets_412_and_concurrent_writes_serialise(platform: Platform, alice: dict) -> None:
    with platform.client("catalog", ALICE) as api:
        created = api.post("/v1/offers", json=offer_body(alice["provider"]["id"]))
        offer, tag = created.json(), created.headers["ETag"]
        assert api.get(f"/v1/offers/{offer['id']}").headers["ETag"] == tag
        body = offer_body(alice["provider"]["id"], external_id=offer["external_id"])

        def put(title: str) -> int:
            return api.put(f"/v1/offers/{offer['id']}", json=body | {"title": title},
                           headers={"If-Match": tag}).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = sorted(pool.map(put, ["Erster", "Zweiter", "Dritter", "Vierter"]))
        assert codes == [200, 412, 412, 412]
        assert api.get(f"/v1/offers/{offer['id']}").json()["version"] == offer["version"] + 1
        # a withdraw after someone else's change, with the old ETag, does nothing
        assert api.post(f"/v1/offers/{offer['id']}/withdraw", headers={"If-Match": tag}).status_code == 412
        current = api.get(f"/v1/offers/{offer['id']}")
        assert current.json()["status"] == "published"
        withdrawn = api.post(f"/v1/offers/{offer['id']}/withdraw", headers={"If-Match": current.headers["ETag"]})
        assert withdrawn.status_code == 200
        # no write can re-publish a withdrawn offer
        assert api.put(f"/v1/offers/{offer['id']}", json=body, headers={"If-Match": withdrawn.headers["ETag"]}
                       ).status_code == 409


def test_every_status_change_is_an_event(platform: Platform, alice: dict) -> None:
    with platform.client("catalog", ALICE) as api:
        offer = api.post("/v1/offers", json=offer_body(alice["provider"]["id"])).json()
        body = offer_body(alice["provider"]["id"], external_id=offer["external_id"])
        assert api.put(f"/v1/offers/{offer['id']}", json=body | {"status": "draft"}).status_code == 200
        assert api.put(f"/v1/offers/{offer['id']}", json=body | {"status": "draft", "title": "Still"}
                       ).status_code == 200  # a draft's edit: nobody outside sees it, no event
        assert api.post(f"/v1/offers/{offer['id']}/withdraw").status_code == 200
    events = wait_until("three events", lambda: (e := platform.events(OFFERS_TOPIC, offer["id"])) and len(e) >= 3
                        and e)
    assert [(t.rsplit(".", 2)[-2], e["status"]) for t, e in events] == [
        ("published", "published"), ("updated", "draft"), ("withdrawn", "withdrawn")]
    assert events[1][0] == OFFER_UPDATED and events[2][0] == OFFER_WITHDRAWN


def test_network_sharing_defaults_widen_what_other_networks_see(platform: Platform, alice: dict) -> None:
    offer = alice["offer"]  # shared with no one
    with platform.client("catalog", "lueneburg-employer") as api:
        assert api.get(f"/v1/offers/{offer['id']}").status_code == 404
    with platform.client("catalog", ALICE) as api:
        assert api.put("/v1/sharing", json={"networks": ["lueneburg"]}).status_code == 403  # admins only
    with platform.client("catalog", ADMIN) as admin:
        assert admin.put("/v1/sharing", json={"networks": ["lueneburg"]}).json() == {"networks": ["lueneburg"]}
    try:
        with platform.client("catalog", "lueneburg-employer") as api:
            seen = api.get(f"/v1/offers/{offer['id']}")
            assert seen.status_code == 200 and seen.json()["visibility"]["networks"] == ["lueneburg"]
            assert api.get(f"/v1/offers/{alice['draft']['id']}").status_code == 404  # drafts stay home
        event = wait_until("offer event with the widened audience", lambda: [
            e for _, e in platform.events(OFFERS_TOPIC, offer["id"]) if "lueneburg" in e["visibility"]["networks"]])
        assert event
    finally:
        with platform.client("catalog", ADMIN) as admin:
            admin.put("/v1/sharing", json={"networks": []})
    with platform.client("catalog", "lueneburg-employer") as api:
        assert api.get(f"/v1/offers/{offer['id']}").status_code == 404


def test_sharing_and_member_changes_are_in_the_network_audit_log(platform: Platform, alice: dict) -> None:
    provider = alice["provider"]
    with platform.client("catalog", ADMIN) as admin:
        admin.put("/v1/sharing", json={"networks": ["westfaelisches-ruhrgebiet"]})
        admin.put("/v1/sharing", json={"networks": []})
        admin.put(f"/v1/providers/{provider['id']}/members", json={"members": provider["members"]})
        log = admin.get("/v1/audit", params={"page_size": 10})
    assert log.status_code == 200, log.text
    entries = log.json()["items"]
    members_entry, unshared, shared = entries[0], entries[1], entries[2]  # newest first
    assert members_entry["action"] == "provider.members_set" and members_entry["target"] == provider["id"]
    assert members_entry["details"]["members"] == sorted(provider["members"])
    assert unshared["action"] == shared["action"] == "sharing.set"
    assert shared["details"] == {"before": [], "networks": ["westfaelisches-ruhrgebiet"]}
    assert unshared["details"] == {"before": ["westfaelisches-ruhrgebiet"], "networks": []}
    assert {e["actor"] for e in entries[:3]} == {ADMIN} and {e["tenant"] for e in entries} == {TENANT}
    with platform.client("catalog", ALICE) as api:
        assert api.get("/v1/audit").status_code == 403  # admins only
    with platform.client("catalog", "lueneburg-admin") as other:  # another network reads only its own
        assert all(e["tenant"] == "lueneburg" for e in other.get("/v1/audit").json()["items"])


def test_offer_moved_back_to_draft_leaves_search_and_matches(platform: Platform) -> None:
    """Published → draft: gone from search, and matching retracts the match (through the broker)."""
    from tests.platform import alone_at, demand_body, lonely_place

    offer_at, demand_at = alone_at(lonely_place())
    with platform.client("catalog", ALICE) as api:
        provider = api.post("/v1/providers", json={"name": "Entwurfsschule", "emails": ["e@s.example"]}).json()
        offer = api.post("/v1/offers", json=offer_body(provider["id"], title="Staplerschein Entwurfstest",
                                                       **offer_at)).json()
    with platform.client("matching", "lueneburg-employer") as api:
        demand = api.post("/v1/demands", json=demand_body(**demand_at)).json()

    def matched() -> set[str]:
        with platform.client("matching", "lueneburg-employer") as api:
            return {m["offer_id"] for m in api.get(f"/v1/demands/{demand['id']}/matches").json()["items"]}

    wait_until("the match", lambda: offer["id"] in matched())
    with platform.client("catalog", ALICE) as api:
        body = offer_body(provider["id"], external_id=offer["external_id"], title=offer["title"], status="draft",
                          **offer_at)
        assert api.put(f"/v1/offers/{offer['id']}", json=body).status_code == 200
    wait_until("the match retracted", lambda: offer["id"] not in matched())
    with platform.client("catalog", "lueneburg-employer") as api:
        found = api.get("/v1/offers", params={"q": "Entwurfstest"}).json()["items"]
    assert offer["id"] not in {o["id"] for o in found}
