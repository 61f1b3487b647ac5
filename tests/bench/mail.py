"""`make bench-mail`: 10,000 MatchFound events through the real broker, the notifications consumer
and dispatcher, Redis and two Celery worker processes to the SMTP sink; one worker is SIGKILLed
when half of the mails have arrived.

Prints mails per minute (first event produced → last mail accepted), p50/p99 from producing a
MatchFound to the sink's 250 for its mail, and the counts of lost and duplicated mails. Same run,
same broker: the broker's own produce → consume round trip as the floor."""

from __future__ import annotations

import argparse
import email
import sys
import time
import uuid
from datetime import UTC, datetime
from email import policy
from pathlib import Path

from kafka import KafkaProducer

from contracts import (
    MATCH_FOUND,
    MATCHES_TOPIC,
    PROVIDER_REGISTERED,
    PROVIDERS_TOPIC,
    TENANT_CREATED,
    TENANTS_TOPIC,
)
from deploy.local.stack import Stack, stack_slot, wait_for
from runtime.events import Event
from tests.bench.flow import bench_config, broker_round_trip, percentiles

TENANT = "hellweg-hochsauerland"


def provider_event(provider_id: str) -> Event:
    return Event(PROVIDER_REGISTERED, "catalog", TENANT, provider_id, {
        "id": provider_id, "tenant": TENANT, "name": f"Bildungsträger {provider_id[:6]}",
        "emails": [f"kurse-{provider_id[:8]}@anbieter.example"], "version": 1})


def match_event(provider_id: str, n: int) -> Event:
    match_id = str(uuid.uuid4())
    return Event(MATCH_FOUND, "matching", TENANT, match_id, {
        "id": match_id, "tenant": TENANT, "score": 0.8, "status": "active",
        "reasons": {"skills": ["SPS"], "distance_km": 12.0, "start": "2027-03-20",
                    "funding": {"qcg": True, "bildungsgutschein": False, "aufstiegsbafoeg": False}},
        "demand": {"id": str(uuid.uuid4()), "title": f"SPS-Schulung Nr. {n}",
                   "description": "Zwei Instandhalter sollen S7-Steuerungen programmieren lernen.",
                   "skills": ["SPS"], "participants": 2, "start_from": "2027-03-01", "start_to": "2027-05-31",
                   "employer": {"name": "Müller Metallbau GmbH", "city": "Arnsberg", "employees": 35,
                                "contact": None}},
        "offer": {"id": str(uuid.uuid4()), "tenant": TENANT, "provider_id": provider_id, "external_id": None,
                  "title": "SPS-Techniker/in Siemens S7"},
    })


def accepted_mails(mail_dir: Path) -> list[tuple[str, float]]:
    """(match id, time the sink accepted it) per mail file; the sink names files by that time."""
    found = []
    for path in mail_dir.glob("*.eml"):
        stamp = datetime.strptime(path.name[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()
        with open(path, "rb") as f:
            head = f.read(4096)
        msg = email.message_from_bytes(head.split(b"\r\n\r\n", 1)[0], policy=policy.compat32)
        found.append((msg["X-Bildungsraum-Match"], stamp))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--providers", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    args = parser.parse_args()

    config = bench_config()
    # Its own var/ and its own Redis server (a project-local one on a port of its own), so it runs
    # beside this checkout's tests without touching their Redis databases.
    config.var_dir = config.var_dir.parent / "bench-mail"
    config.ports["redis"] = 26379 + 100 * stack_slot()
    config.redis_db = 0
    stack = Stack(config)
    mail_dir = config.var_dir / "mail"
    for path in mail_dir.glob("*"):
        path.unlink()
    print("starting broker, PostgreSQL, Redis, SMTP sink, notifications, two workers …", flush=True)
    stack.ensure_postgres()  # its own server: it must run before its databases can be reset
    stack.reset_databases()
    stack.ensure_redis()
    import redis
    redis.Redis.from_url(config.redis_url).flushdb()
    stack.start_broker()
    stack.start_issuer()
    stack.start_smtp()
    # The network, as identity announces it: a service is ready once it knows a tenant.
    producer = KafkaProducer(bootstrap_servers=config.bootstrap, acks="all")
    tenant = Event(TENANT_CREATED, "identity", TENANT, TENANT,
                   {"id": TENANT, "name": "Bildungsraum Hellweg-Hochsauerland", "status": "active"})
    producer.send(TENANTS_TOPIC, key=TENANT.encode(), value=tenant.value(), headers=tenant.headers()).get(10)
    producer.close()
    env = stack.service_env("notifications")
    # A killed worker's tasks come back after the visibility timeout: short, as the tests set it.
    env |= {"BR_CELERY_VISIBILITY_TIMEOUT": "10", "BR_CELERY_RESTORE_INTERVAL": "2", "BR_SWEEP_GRACE_SECONDS": "30"}
    stack.migrate(("notifications",))
    stack._spawn("notifications", [sys.executable, "-m", "services.notifications"], env)
    stack.wait_ready("notifications", timeout=240)  # a loaded machine: migrations, group join
    workers = []
    for n in (1, 2):
        name = f"celery-worker-{n}"
        stack._spawn(name, [sys.executable, "-m", "services.notifications.worker", "worker", "-Q", config.celery_queue,
                            "-c", str(args.concurrency), "--without-mingle", "--without-gossip",
                            "-n", f"bench-{n}@%h", "--loglevel", "WARNING"], env)
        workers.append(name)
    time.sleep(5)  # both workers connected to Redis
    try:
        run(stack, args, mail_dir, workers)
    finally:
        stack.stop_all()


def run(stack: Stack, args, mail_dir: Path, workers: list[str]) -> None:
    bootstrap = stack.config.bootstrap
    floor = broker_round_trip(bootstrap, 200)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    providers = [str(uuid.uuid4()) for _ in range(args.providers)]
    for provider_id in providers:
        e = provider_event(provider_id)
        producer.send(PROVIDERS_TOPIC, key=e.key.encode(), value=e.value(), headers=e.headers())
    producer.flush()
    time.sleep(3)  # the providers known before the matches come

    produced: dict[str, float] = {}
    started = time.time()
    for n in range(args.events):
        e = match_event(providers[n % len(providers)], n)
        producer.send(MATCHES_TOPIC, key=e.key.encode(), value=e.value(), headers=e.headers())
        produced[e.key] = time.time()
    producer.flush()
    print(f"{args.events} MatchFound produced in {time.time() - started:.1f} s", flush=True)

    half = args.events // 2
    wait_for("half of the mails", lambda: sum(1 for _ in mail_dir.glob("*.eml")) >= half, timeout=600)
    stack.kill(workers[0])
    killed_at = time.time()
    print(f"SIGKILLed {workers[0]} at {sum(1 for _ in mail_dir.glob('*.eml'))} mails", flush=True)

    deadline = time.time() + 900
    last_count, last_change = -1, time.time()
    while time.time() < deadline:
        count = sum(1 for _ in mail_dir.glob("*.eml"))
        if count != last_count:
            last_count, last_change = count, time.time()
        if count >= args.events and time.time() - last_change > 15:
            break  # all there, and nothing more (no late duplicate) for 15 s
        if count < args.events and time.time() - last_change > 120:
            break  # stuck: count what is lost
        time.sleep(1)

    mails = accepted_mails(mail_dir)
    per_match: dict[str, list[float]] = {}
    for match_id, stamp in mails:
        per_match.setdefault(match_id, []).append(stamp)
    lost = [m for m in produced if m not in per_match]
    duplicated = sum(len(s) - 1 for s in per_match.values())
    latencies = [min(per_match[m]) - produced[m] for m in produced if m in per_match]
    last = max(s for _, s in mails)
    minutes = (last - started) / 60
    print(f"\nmails accepted by the sink: {len(mails)} for {args.events} events "
          f"(workers: 2 x -c {args.concurrency}; one SIGKILLed {killed_at - started:.0f} s in)")
    print(f"throughput:                 {len(per_match) / minutes:,.0f} mails/min "
          f"({len(per_match)} in {last - started:.1f} s)")
    print(f"event produced → SMTP 250:  {percentiles(latencies)}")
    print(f"broker round trip (floor):  {percentiles(floor)}")
    print(f"lost: {len(lost)}   duplicated: {duplicated}")


if __name__ == "__main__":
    main()
