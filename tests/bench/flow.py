"""`make bench`: 500 offers published and matched against open demands.

Prints p50/p99 from `POST /v1/offers` to (a) the match being served by `GET /v1/demands/{id}/matches`
and (b) the provider's mail at the SMTP sink, and, in the same run on the same broker, the broker's
own produce-to-consume round trip as the floor. The stack runs on its own ports and databases."""

from __future__ import annotations

import argparse
import email
import statistics
import threading
import time
import uuid

import httpx
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from deploy.local.stack import ROOT, Stack, StackConfig, stack_slot
from tests.platform import Platform, demand_body, offer_body


def bench_config() -> StackConfig:
    config = StackConfig.for_tests(ROOT / "var" / "bench")
    # Its own databases; with BR_TEST_SLOT set, the slot's Redis database (do not run it beside that slot's tests).
    slot = stack_slot()
    config.database_prefix = f"bildungsraum_bench{slot or ''}"
    config.redis_db = config.redis_db if slot else 14
    config.celery_queue = f"notifications-bench{slot or ''}"
    for name in ("portal", "catalog", "matching", "notifications", "identity", "issuer", "broker", "smtp"):
        config.ports[name] += 10_000
    return config


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {q[49] * 1000:7.1f} ms   p99 {q[98] * 1000:7.1f} ms   (n={len(values)})"


def broker_round_trip(bootstrap: str, count: int) -> list[float]:
    topic = f"bench-floor-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"floor-{topic}",
                             auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000,
                             fetch_max_wait_ms=10)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    while not consumer.assignment():
        consumer.poll(100)
    samples = []
    for i in range(count):
        sent = time.perf_counter()
        producer.send(topic, key=str(i).encode(), value=b"x" * 1024).get(10)
        got = False
        while not got:
            got = any(r.key == str(i).encode() for rs in consumer.poll(1000).values() for r in rs)
        samples.append(time.perf_counter() - sent)
    producer.close()
    consumer.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0, help="offers per second")
    args = parser.parse_args()

    stack = Stack(bench_config())
    for path in (stack.config.var_dir / "mail").glob("*"):
        path.unlink()
    stack.reset_databases()
    print("starting the stack …", flush=True)
    stack.start()
    try:
        run(Platform(stack), args.offers, args.rate)
    finally:
        stack.stop_all()


def run(platform: Platform, offers: int, rate: float) -> None:
    with platform.client("catalog", "hellweg-hochsauerland-provider") as api:
        provider = api.post("/v1/providers", json={"name": "Bench-Akademie",
                                                   "emails": ["bench@bildungsraum.example"]}).json()
    demands = []
    for user in ("lueneburg-employer", "westfaelisches-ruhrgebiet-employer"):
        with platform.client("matching", user) as api:
            # a wide radius so that the Lüneburg session fits both networks' employers
            demands.append((user, api.post("/v1/demands", json=demand_body(max_distance_km=1000)).json()["id"]))

    posted: dict[str, float] = {}
    served: dict[str, float] = {}
    mailed: dict[str, float] = {}
    done = threading.Event()

    def poll_matches() -> None:
        clients = [(platform.client("matching", user), demand_id) for user, demand_id in demands]
        while not done.is_set():
            for client, demand_id in clients:
                now = time.time()
                for item in client.get(f"/v1/demands/{demand_id}/matches").json()["items"]:
                    served.setdefault(item["offer_id"], now)
            time.sleep(0.01)

    def poll_mail() -> None:
        seen: set[str] = set()
        while not done.is_set():
            for path in platform.config.mail_dir.glob("*.eml"):
                if path.name in seen:
                    continue
                seen.add(path.name)
                offer_id = email.message_from_bytes(path.read_bytes()).get("X-Bildungsraum-Offer")
                if offer_id:
                    mailed[offer_id] = min(mailed.get(offer_id, float("inf")), path.stat().st_mtime)
            time.sleep(0.01)

    pollers = [threading.Thread(target=poll_matches, daemon=True), threading.Thread(target=poll_mail, daemon=True)]
    for t in pollers:
        t.start()
    print(f"publishing {offers} offers at {rate:.0f}/s, matched against {len(demands)} open demands …", flush=True)
    with httpx.Client(base_url=platform.config.url("catalog"), timeout=15, headers={
            "Authorization": f"Bearer {platform.token('hellweg-hochsauerland-provider')}"}) as api:
        started = time.time()
        for i in range(offers):
            body = offer_body(provider["id"], external_id=f"bench-{i}", visibility={"scope": "all", "networks": []})
            t0 = time.time()
            response = api.post("/v1/offers", json=body)
            response.raise_for_status()
            posted[response.json()["id"]] = t0
            time.sleep(max(0.0, started + (i + 1) / rate - time.time()))
    deadline = time.time() + 120
    while time.time() < deadline and (len(served) < offers or len(mailed) < offers):
        time.sleep(0.2)
    done.set()

    to_match = [served[o] - t for o, t in posted.items() if o in served]
    to_mail = [mailed[o] - t for o, t in posted.items() if o in mailed]
    floor = broker_round_trip(platform.config.bootstrap, 500)
    print()
    print(f"POST /v1/offers -> match served   {percentiles(to_match)}")
    print(f"POST /v1/offers -> mail at sink   {percentiles(to_mail)}")
    print(f"broker produce -> consume (floor) {percentiles(floor)}")
    if len(to_match) < offers or len(to_mail) < offers:
        raise SystemExit(f"incomplete: {len(to_match)} matched, {len(to_mail)} mailed of {offers}")


if __name__ == "__main__":
    main()
