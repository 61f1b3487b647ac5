"""One real flow through all four services, as real users with real tokens."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import asyncpg
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from contracts import MATCH_FOUND, MATCHES_TOPIC
from runtime.tracing import parse_trace_id
from tests.platform import Platform, alone_at, body_text, demand_body, lonely_place, offer_body, wait_until

pytestmark = pytest.mark.e2e

HELLWEG_PROVIDER = "hellweg-hochsauerland-provider"


def _matches(platform: Platform, username: str, demand_id: str) -> list[dict]:
    with platform.client("matching", username) as api:
        response = api.get(f"/v1/demands/{demand_id}/matches")
        assert response.status_code == 200, response.text
        return response.json()["items"]


@pytest.fixture(scope="module")
def hellweg_provider(platform: Platform) -> dict:
    with platform.client("catalog", HELLWEG_PROVIDER) as api:
        response = api.post("/v1/providers", json={
            "name": "Bildungswerk Hellweg gGmbH", "emails": [f"{HELLWEG_PROVIDER}@bildungsraum.example"],
            "external_id": "bw-hellweg"})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def shared_flow(platform: Platform, hellweg_provider: dict) -> dict:
    """Hellweg's provider publishes an offer shared with Lüneburg; Lüneburg's employer opens a
    demand it fits."""
    offer_at, demand_at = alone_at(lonely_place())  # no look-alike of another test takes its place
    with platform.client("catalog", HELLWEG_PROVIDER) as api:
        response = api.post("/v1/offers", json=offer_body(hellweg_provider["id"], **offer_at))
    assert response.status_code == 201, response.text
    offer = response.json()
    with platform.client("matching", "lueneburg-employer") as api:
        response = api.post("/v1/demands", json=demand_body(**demand_at))
    assert response.status_code == 201, response.text
    demand = response.json()
    items = wait_until("the offer among the demand's matches",
                       lambda: [m for m in _matches(platform, "lueneburg-employer", demand["id"])
                                if m["offer_id"] == offer["id"]])
    return {"offer": offer, "demand": demand, "match": items[0]}


def test_shared_offer_is_matched_and_provider_mailed_once(platform: Platform, shared_flow: dict) -> None:
    offer, demand, match = shared_flow["offer"], shared_flow["demand"], shared_flow["match"]
    assert match["external_id"] == offer["external_id"]
    assert match["score"] > 0
    assert "Gabelstapler" in match["reasons"]["skills"]
    assert match["reasons"]["place"] == "Lüneburg"

    mails = wait_until("the provider's mail", lambda: platform.mails_for_offer(offer["id"]))
    assert len(mails) == 1
    mail = mails[0]
    assert f"{HELLWEG_PROVIDER}@bildungsraum.example" in mail["To"]
    assert demand["title"] in body_text(mail)

    # The delivery log: the provider's network sees the sent mail and its attempt; other networks
    # (the demand's own included) and employers do not.
    def logged(username: str, **claims) -> list[dict]:
        token = platform.mint(username, **claims) if claims else platform.token(username)
        with platform.client("notifications", Authorization=f"Bearer {token}") as api:
            response = api.get("/v1/deliveries", params={"provider_id": offer["provider_id"]})
            assert response.status_code == 200, response.text
            return [d for d in response.json()["items"] if d["offer_id"] == offer["id"]]

    # The provider user acts for its provider (the token's `providers` claim, set by identity).
    delivery = wait_until("the delivery logged as sent", lambda: [
        d for d in logged(HELLWEG_PROVIDER, providers=[offer["provider_id"]]) if d["status"] == "sent"])[0]
    assert delivery["demand_title"] == demand["title"] and delivery["message_id"] in mail["Message-ID"]
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["sent"]
    assert logged("lueneburg-admin") == []
    with platform.client("notifications", "lueneburg-employer") as api:
        assert api.get("/v1/deliveries").status_code == 403


def test_replay_and_worker_restart_send_no_second_mail(platform: Platform, shared_flow: dict) -> None:
    offer = shared_flow["offer"]
    wait_until("the first mail", lambda: platform.mails_for_offer(offer["id"]))
    stack = platform.stack

    # Replay: with the notifications service stopped (its group empty), rewind the group to offset 0.
    stack.stop("notifications")
    rewind = KafkaConsumer(bootstrap_servers=platform.config.bootstrap, group_id="notifications",
                           enable_auto_commit=False)
    partitions = [TopicPartition(MATCHES_TOPIC, p) for p in rewind.partitions_for_topic(MATCHES_TOPIC)]
    rewind.assign(partitions)
    wait_until("the group to accept the rewind", lambda: _try_commit(rewind, partitions), timeout=30, interval=0.5)
    rewind.close()
    stack.start_service("notifications")

    stack.stop("celery-worker")
    stack.start_worker()

    def replayed_duplicates() -> float:
        """MatchFound events the restarted service's inbox recognised as seen before."""
        with platform.client("notifications") as api:
            text = api.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("events_consumed_total{") and 'outcome="duplicate"' in line
                   and MATCH_FOUND in line)

    wait_until("the replayed MatchFound to reach the inbox again", lambda: replayed_duplicates() >= 1, timeout=30)
    time.sleep(3)  # give a wrongly re-sent mail time to arrive
    assert len(platform.mails_for_offer(offer["id"])) == 1


def _try_commit(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> bool:
    try:
        consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in partitions})
        return True
    except Exception:
        return False


def test_other_network_never_sees_a_home_offer(platform: Platform, hellweg_provider: dict) -> None:
    with platform.client("catalog", HELLWEG_PROVIDER) as api:
        response = api.post("/v1/offers", json=offer_body(
            hellweg_provider["id"], visibility={"scope": "home", "networks": []},
            sessions=[{"start": "2030-01-01", "end": "2030-01-03",
                       "location": {"zip": "59494", "city": "Soest", "lat": 51.57, "lon": 8.11}}]))
    assert response.status_code == 201, response.text
    home_offer = response.json()
    soest = {"name": "Metallbau Soest", "employees": 20, "zip": "59494", "city": "Soest", "lat": 51.57, "lon": 8.11}
    window = {"start_from": "2029-12-01", "start_to": "2030-02-01"}

    # Control: Hellweg's own employer with this demand does get the offer, so it is matchable at all.
    with platform.client("matching", "hellweg-hochsauerland-employer") as api:
        own = api.post("/v1/demands", json=demand_body(employer=soest, **window)).json()
    wait_until("the home offer matched in its own network", lambda: any(
        m["offer_id"] == home_offer["id"] for m in _matches(platform, "hellweg-hochsauerland-employer", own["id"])))

    with platform.client("matching", "westfaelisches-ruhrgebiet-employer") as api:
        other = api.post("/v1/demands", json=demand_body(employer=soest, **window)).json()
    assert all(m["offer_id"] != home_offer["id"]
               for m in _matches(platform, "westfaelisches-ruhrgebiet-employer", other["id"]))
    with platform.client("catalog", "westfaelisches-ruhrgebiet-employer") as api:
        assert api.get(f"/v1/offers/{home_offer['id']}").status_code == 404
        found = api.get("/v1/offers", params={"q": "Staplerschein"}).json()["items"]
        assert home_offer["id"] not in {o["id"] for o in found}

    # Row-level security: the services' own role, a query that forgets its tenant filter.
    async def unfiltered(service: str, sql: str) -> set[str]:
        conn = await asyncpg.connect(user=f"br_{service}_app", host=platform.config.host,
                                     port=platform.config.ports["postgres"],
                                     database=f"{platform.config.database_prefix}_{service}")
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', 'westfaelisches-ruhrgebiet', true)")
                return {str(r[0]) for r in await conn.fetch(sql)}
        finally:
            await conn.close()

    assert home_offer["id"] not in asyncio.run(unfiltered("matching", "SELECT id FROM offers"))
    assert home_offer["id"] not in asyncio.run(unfiltered("catalog", "SELECT id FROM offers"))
    assert own["id"] not in asyncio.run(unfiltered("matching", "SELECT id FROM demands"))
    assert not asyncio.run(unfiltered("matching", "SELECT demand_id FROM matches")) & {own["id"]}


def test_trace_context_travels_from_the_request_to_the_mail(platform: Platform, shared_flow: dict,
                                                            hellweg_provider: dict) -> None:
    # A demand of its own: the provider has heard of shared_flow's demand already (once per demand).
    offer_at, demand_at = alone_at(lonely_place())
    with platform.client("matching", "lueneburg-employer") as api:
        demand = api.post("/v1/demands", json=demand_body(**demand_at))
    assert demand.status_code == 201, demand.text
    trace_id = secrets.token_hex(16)
    with platform.client("catalog", HELLWEG_PROVIDER, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01") as api:
        response = api.post("/v1/offers", json=offer_body(hellweg_provider["id"], **offer_at))
    assert response.status_code == 201 and parse_trace_id(response.headers["traceparent"]) == trace_id
    offer_id = response.json()["id"]

    # two hops later: matching's MatchFound for this offer (the demand above fits it)
    matches = KafkaConsumer(MATCHES_TOPIC, bootstrap_servers=platform.config.bootstrap, group_id=None,
                            auto_offset_reset="earliest", consumer_timeout_ms=500)

    def found() -> dict | None:
        for record in matches:
            if dict(record.headers).get("ce_type") != MATCH_FOUND.encode():
                continue  # another event of the topic, or what is none (the poison test's records)
            if json.loads(record.value)["offer"]["id"] == offer_id:
                return {k: (v or b"").decode() for k, v in record.headers}
        return None

    headers = wait_until("the MatchFound of the traced offer", found)
    matches.close()
    assert headers["ce_type"] == MATCH_FOUND and parse_trace_id(headers["traceparent"]) == trace_id

    # and the worker that sent the mail logged under the same trace
    wait_until("the traced offer's mail", lambda: platform.mails_for_offer(offer_id))
    # (logged after the delivery's commit, which follows the SMTP server's 250: a moment later)
    def logged_sent() -> bool:
        worker_log = (platform.stack.log_dir / "celery-worker.log").read_text()
        return any(json.loads(line).get("trace_id") == trace_id and "sent" in json.loads(line)["message"]
                   for line in worker_log.splitlines() if line.startswith("{"))

    wait_until("the worker's log line of the sent mail", logged_sent, timeout=15)
    with platform.client("matching", "lueneburg-employer") as api:
        api.post(f"/v1/demands/{demand.json()['id']}/close")
