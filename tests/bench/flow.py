"""`make bench-pipeline`: a sustained load through all four services.

Offers are published across the three tenants at a fixed rate for ``--seconds`` (default 60) while
demands of the other tenants are open. Each offer is relevant to exactly one open demand of another
tenant (same topic, its only session starts on that demand's own day; each offer's text drawn for it
from sentences of forklift courses, as long as real offers' texts), and each demand hears of as
many offers as it may have matches, each from a different provider: every offer makes one match and
one mail, also under the rules that a provider hears of a demand once and a demand's matches are
bounded (``relevance.MAX_MATCHES_PER_DEMAND``).

Per offer it records the time from when its ``POST /v1/offers`` was due (a sender behind schedule
counts its wait) to (a) the match row in matching (its ``created_at``: the start of the transaction
that inserts it, by the database clock of this same machine, so the ranking and commit after it are
not counted) and (b) the provider's mail file at the SMTP sink (its mtime); p50/p99 over the run and
over its first and last fifth (a later fifth much slower than the first means a growing backlog:
the rate is not held). It samples each
process's resident memory, and in the same run, on the same broker, measures the floor: the broker's
own produce -> consume round trip. ``--replicas 2`` runs two matching and two notifications
processes (consumers in the same groups) and two Celery workers.

``--backlog N``: how fast matching catches up, as after an import or an outage. Its process is
stopped (SIGSTOP), N offers are published, it is let go on (SIGCONT), and the bench times until every
offer's match is committed: offers per second drained, and matching's CPU per offer."""

from __future__ import annotations

import argparse
import asyncio
import email
import os
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, date, timedelta
from pathlib import Path

import asyncpg
import httpx
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from deploy.local.stack import ROOT, Stack, StackConfig, stack_slot, wait_for
from services.matching.encoder import usable_cpus
from services.matching.relevance import MAX_MATCHES_PER_DEMAND
from tests.platform import Platform, demand_body, offer_body

TENANTS = ("hellweg-hochsauerland", "westfaelisches-ruhrgebiet", "lueneburg")
PER_DEMAND = MAX_MATCHES_PER_DEMAND  # matches a demand may get (and distinct providers per tenant)


def bench_config() -> StackConfig:
    config = StackConfig.for_tests(ROOT / "var" / "bench")
    # Its own databases; with BR_TEST_SLOT set, the slot's Redis database (do not run it beside that slot's tests).
    slot = stack_slot()
    config.database_prefix = f"bildungsraum_bench{slot or ''}"
    config.redis_db = config.redis_db if slot else 14
    config.celery_queue = f"notifications-bench{slot or ''}"
    for name in ("portal", "catalog", "matching", "notifications", "identity", "issuer", "broker", "smtp"):
        config.ports[name] += 10_000
    # A PostgreSQL of its own under var/bench: the machine's shared one runs out of connections when
    # several suites run, and its other load would be in the figures.
    config.ports["postgres"] = 37_432 + 100 * slot
    return config


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "no samples"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {q[49] * 1000:8.1f} ms   p99 {q[98] * 1000:8.1f} ms   (n={len(values)})"


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


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


class ProcessSampler(threading.Thread):
    """Peak resident memory and CPU time per stack process (with its children: Celery's pool), from
    /proc: what each process costs, so the run shows where a rate's cores go."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.peak_mib, self.done = stack, {}, threading.Event()
        self._ticks = os.sysconf("SC_CLK_TCK")

    def _by_tree(self) -> dict[int, tuple[int, float]]:
        """(resident KiB, CPU seconds) of each process with all its descendants: the postmaster (its
        own session, under runuser) with its backends, Celery with its pool."""
        own: dict[int, tuple[int, float]] = {}
        children: dict[int, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / self._ticks
                rss = next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                           if line.startswith("VmRSS:"))
            except (OSError, StopIteration, IndexError, ValueError):
                continue  # gone meanwhile, or a kernel thread
            own[int(proc.name)] = (rss, cpu)
            children.setdefault(int(fields[1]), []).append(int(proc.name))

        def total(pid: int) -> tuple[int, float]:
            kib, seconds = own.get(pid, (0, 0.0))
            for child in children.get(pid, []):
                k, s = total(child)
                kib, seconds = kib + k, seconds + s
            return kib, seconds

        return {process.pid: total(process.pid) for process in self.stack.processes.values()}

    def sample(self) -> dict[str, float]:
        """Each process's CPU seconds so far (and its peak memory updated)."""
        totals, cpu = self._by_tree(), {}
        for name, process in list(self.stack.processes.items()):
            kib, cpu[name] = totals.get(process.pid, (0, 0.0))
            self.peak_mib[name] = max(self.peak_mib.get(name, 0), kib / 1024)
        return cpu

    def run(self) -> None:
        while not self.done.wait(2):
            self.sample()


def start_replicas(stack: Stack, replicas: int) -> None:
    """More consumer processes in the same groups (and HTTP on ports of their own), more workers."""
    for n in range(2, replicas + 1):
        for service in ("matching", "notifications"):
            env = {**stack.service_env(service), "BR_HTTP_PORT": str(stack.config.ports[service] + 50 + n)}
            stack._spawn(f"{service}-{n}", [sys.executable, "-m", f"services.{service}"], env)
        stack._spawn(f"celery-worker-{n}", [
            sys.executable, "-m", "services.notifications.worker", "worker",
            "-Q", stack.config.celery_queue, "-c", "2", "--without-mingle", "--without-gossip", "-n",
            f"notifications-bench-{n}@%h", "--loglevel", "INFO",
        ], stack.service_env("notifications-worker"))
    for n in range(2, replicas + 1):  # a worker that cannot start must fail the run, not halve it quietly
        wait_for(f"Celery worker {n}", lambda n=n: b"ready" in (stack.log_dir / f"celery-worker-{n}.log").read_bytes(),
                 process=stack.processes[f"celery-worker-{n}"])
    time.sleep(8 if replicas > 1 else 0)  # let the new consumers join their groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0, help="offers per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts")
    parser.add_argument("--replicas", type=int, default=1, choices=(1, 2),
                        help="matching and notifications processes, and Celery workers")
    parser.add_argument("--backlog", type=int, default=0,
                        help="instead of a steady rate: this many offers published while matching is stopped")
    args = parser.parse_args()

    # the matching processes share this machine's cores as pods share a node: each its part for encoding
    # (as the manifest gives it its CPU limit), not every core each
    os.environ["BR_ENCODER_THREADS"] = str(max(1, usable_cpus() // args.replicas))
    stack = Stack(bench_config())
    for path in (stack.config.var_dir / "mail").glob("*"):
        path.unlink()
    stack.ensure_postgres()
    wait_for("PostgreSQL accepting connections", lambda: asyncio.run(_accepts(stack.config)), timeout=60)
    stack.reset_databases()
    print("starting the stack …", flush=True)
    try:
        stack.start()
        start_replicas(stack, args.replicas)
        if args.backlog:
            drain(Platform(stack), args.backlog)
        else:
            run(Platform(stack), args.rate, args.seconds, args.replicas)
    finally:
        stack.stop_all()


def _day(n: int) -> str:
    return (date.today() + timedelta(days=30 + n)).isoformat()


def setup(platform: Platform, offers: int) -> tuple[dict[str, list[str]], int]:
    """Providers (PER_DEMAND per tenant) and as many demands as ``offers`` offers need, each on a day of
    its own; answers the providers by tenant and the number of demands."""
    demands = max(3, -(-offers // PER_DEMAND))
    print(f"setting up {3 * PER_DEMAND} providers and {demands} demands …", flush=True)
    providers: dict[str, list[str]] = {}
    for tenant in TENANTS:
        with platform.client("catalog", f"{tenant}-provider") as api:
            providers[tenant] = [api.post("/v1/providers", json={
                "name": f"Bench-Akademie {tenant} {p}", "emails": [f"bench{p}@{tenant}.example"]}).json()["id"]
                for p in range(PER_DEMAND)]
    clients = {t: platform.client("matching", f"{t}-employer") for t in TENANTS}
    for k in range(demands):  # demand k on day k
        body = demand_body(title=f"Gabelstapler-Ausbildung für Lagerhelfer ({k})", max_distance_km=1000,
                           start_from=_day(k), start_to=_day(k))
        clients[TENANTS[k % 3]].post("/v1/demands", json=body).raise_for_status()
    return providers, demands


# Offers as providers write them: a forklift course in the words of one of many providers, 74–158
# tokens for the encoder, 113 at the median (the evaluation sets' offers have 119 on average), each
# offer's text drawn for it. One short text for every offer, as before, cost the encoder a third of a real offer.
TITLES = ["Staplerschein: Flurförderzeuge sicher führen", "Gabelstapler-Führerschein",
          "Ausbildung zum Gabelstaplerfahrer", "Staplerfahrer-Ausbildung mit Prüfung",
          "Flurförderzeugführer nach DGUV Grundsatz 308-001",
          "Gabelstapler fahren: Theorie und Praxis"]
SKILLS = ["DGUV 308-001", "Ladungssicherung", "Lagerlogistik", "Staplerschein", "Arbeitssicherheit", "Schubmaststapler"]
WHAT = ["Ausbildung zum Gabelstaplerfahrer nach DGUV Grundsatz 308-001 mit Prüfung.",
        "Sie lernen, Gabelstapler und andere Flurförderzeuge sicher zu führen und zu beladen.",
        "Der Lehrgang vermittelt Theorie und Praxis des Staplerfahrens bis zum Fahrausweis.",
        "Rechtliche Grundlagen, Standsicherheit des Staplers, Lastdiagramm und Ladungssicherung, dann"
        " Fahrübungen auf dem Übungsgelände.",
        "Für Beschäftigte in Lager und Logistik, die Gabelstapler im Betrieb führen sollen."]
HOW = ["Die Teilnehmenden arbeiten an praxisnahen Aufgaben aus dem Betriebsalltag.",
       "Kleine Gruppen und erfahrene Dozentinnen und Dozenten sichern den Lernerfolg.",
       "Der Lehrgang ist nach AZAV zugelassen und mit Bildungsgutschein förderbar.",
       "Beschäftigte können über das Qualifizierungschancengesetz gefördert werden.",
       "Geübt wird mit Front- und Schubmaststaplern auf unserem Übungsgelände.",
       "Am Ende stehen eine theoretische und eine praktische Prüfung; der Fahrausweis wird sofort ausgestellt.",
       "Die Unterweisung nach DGUV Vorschrift 68 ist enthalten.",
       "Arbeitskleidung und Sicherheitsschuhe bringen Sie bitte selbst mit."]


def offer_text_for(i: int) -> dict:
    """Title, skills and description of offer i (the same for the same i)."""
    draw = random.Random(i)
    what, how = draw.sample(WHAT, 2), draw.sample(HOW, draw.randint(2, 4))
    skills = ["Gabelstapler", "Flurförderzeuge", *draw.sample(SKILLS, draw.randint(0, 2))]  # as the demand names them
    return {"title": draw.choice(TITLES), "skills": skills,
            "description": " ".join([what[0], how[0], what[1], *how[1:]])}


def offer_for(i: int, providers: dict[str, list[str]], demands: int) -> tuple[str, dict]:
    """Offer i: for demand i mod ``demands`` (on that demand's day), from the next provider of the
    tenant after the demand's; returns (the offer's tenant, the body)."""
    k = i % demands
    tenant = TENANTS[(k + 1) % 3]
    body = offer_body(providers[tenant][(i // demands) % PER_DEMAND], external_id=f"bench-{i}",
                      visibility={"scope": "all", "networks": []}, **offer_text_for(i))
    body["sessions"][0].update(start=_day(k), end=_day(k))
    return tenant, body


def run(platform: Platform, rate: float, seconds: float, replicas: int) -> None:
    offers = int(rate * seconds)
    providers, demands_needed = setup(platform, offers)

    posted: dict[str, float] = {}
    order: list[str] = []
    mailed: dict[str, float] = {}
    done = threading.Event()

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
            time.sleep(0.02)

    processes = ProcessSampler(platform.stack)
    cpu_before, own_cpu_before = processes.sample(), time.process_time()
    processes.start()
    poller = threading.Thread(target=poll_mail, daemon=True)
    poller.start()
    print(f"publishing {offers} offers at {rate:.0f}/s for {seconds:.0f} s, {replicas} of each consumer/worker …",
          flush=True)
    lock = threading.Lock()
    for t in TENANTS:
        platform.token(f"{t}-provider")
    started = time.time()

    def publish(worker: int, workers: int) -> None:
        clients = {t: httpx.Client(base_url=platform.config.url("catalog"), timeout=30) for t in TENANTS}
        for i in range(worker, offers, workers):
            # Timed from when the offer was due, not from when it went out, nor from a retry: a sender
            # behind schedule (the machine saturated) would otherwise hide its wait from the figures.
            t0 = started + i / rate
            time.sleep(max(0.0, t0 - time.time()))
            tenant, body = offer_for(i, providers, demands_needed)
            for attempt in range(3):  # a connection reset under load: the client tries again
                try:
                    response = clients[tenant].post("/v1/offers", json=body, headers={
                        "Authorization": f"Bearer {platform.token(f'{tenant}-provider')}"})  # renewed before expiry
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
            response.raise_for_status()
            with lock:
                posted[response.json()["id"]] = t0
                order.append(response.json()["id"])

    # Several senders: one synchronous client alone cannot post 100/s while the machine is busy.
    senders = [threading.Thread(target=publish, args=(w, 8), daemon=True) for w in range(8)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    sent_for = time.time() - started
    deadline = time.time() + 120
    while time.time() < deadline and len(mailed) < offers:
        time.sleep(0.5)
    done.set()
    processes.done.set()
    cpu_used = {name: seconds - cpu_before.get(name, 0.0) for name, seconds in processes.sample().items()}
    cpu_used["the bench itself (senders, mail poller)"] = time.process_time() - own_cpu_before

    matched = asyncio.run(_match_times(platform.config))
    order.sort(key=posted.get)
    to_match = [matched[o] - posted[o] for o in order if o in matched]
    to_mail = [mailed[o] - posted[o] for o in order if o in mailed]
    floor = broker_round_trip(platform.config.bootstrap, 500)
    fifth = max(1, len(order) // 5)
    first, last = set(order[:fifth]), set(order[-fifth:])

    def fifth_p50(times: dict[str, float], ids: set[str]) -> float:
        return p50([times[o] - posted[o] for o in ids if o in times]) * 1000

    print()
    print(f"rate asked {rate:.0f} offers/s, sent {len(posted) / sent_for:.1f} offers/s over {sent_for:.0f} s; "
          f"{replicas} matching + {replicas} notifications process(es), {replicas} Celery worker(s) (-c 2)")
    print(f"POST /v1/offers -> match in another tenant  {percentiles(to_match)}")
    print(f"POST /v1/offers -> mail at SMTP sink        {percentiles(to_mail)}")
    print(f"broker produce -> consume (floor)           {percentiles(floor)}")
    print(f"mail p50 first fifth {fifth_p50(mailed, first):.0f} ms, last fifth {fifth_p50(mailed, last):.0f} ms "
          f"({'backlog grows' if fifth_p50(mailed, last) > 2 * fifth_p50(mailed, first) + 500 else 'held'})")
    print("peak memory (MiB): " + ", ".join(f"{n} {m:.0f}" for n, m in sorted(processes.peak_mib.items())))
    print(f"CPU per offer (ms, from the first POST to the last mail, {len(posted)} offers): " + ", ".join(
        f"{n} {s / max(1, len(posted)) * 1000:.1f}" for n, s in sorted(cpu_used.items(), key=lambda x: -x[1])))
    if len(to_match) < offers or len(to_mail) < offers:
        raise SystemExit(f"incomplete: {len(to_match)} matched, {len(to_mail)} mailed of {offers}")


def drain(platform: Platform, offers: int) -> None:
    providers, demands_needed = setup(platform, offers)
    matching = platform.stack.processes["matching"]
    processes = ProcessSampler(platform.stack)
    os.kill(matching.pid, signal.SIGSTOP)
    try:
        print(f"matching stopped; publishing {offers} offers …", flush=True)
        with httpx.Client(base_url=platform.config.url("catalog"), timeout=30) as client:
            for i in range(offers):
                tenant, body = offer_for(i, providers, demands_needed)
                client.post("/v1/offers", json=body, headers={
                    "Authorization": f"Bearer {platform.token(f'{tenant}-provider')}"}).raise_for_status()
        time.sleep(2)  # the relay's last batch on the broker
    finally:
        cpu_before = processes.sample()["matching"]
        started = time.time()
        os.kill(matching.pid, signal.SIGCONT)
    print("matching let go on; waiting for every match …", flush=True)
    matched = 0
    while time.time() < started + 600 and matched < offers:
        time.sleep(0.5)
        matched = len(asyncio.run(_match_times(platform.config)))
    took = time.time() - started
    cpu = processes.sample()["matching"] - cpu_before
    print(f"\nbacklog of {offers} offers drained by one matching process in {took:.1f} s: "
          f"{matched / took:.1f} offers/s, matching's CPU {cpu / max(1, matched) * 1000:.1f} ms per offer")
    if matched < offers:
        raise SystemExit(f"incomplete: {matched} of {offers} matched")


async def _accepts(config: StackConfig) -> bool:
    conn = await asyncpg.connect(config.postgres_admin_url, timeout=2)
    await conn.close()
    return True


async def _match_times(config: StackConfig) -> dict[str, float]:
    conn = await asyncpg.connect(config.service_admin_url("matching"))
    try:
        rows = await conn.fetch("SELECT offer_id::text, min(created_at) AS at FROM matches GROUP BY offer_id")
    finally:
        await conn.close()
    return {r["offer_id"]: r["at"].astimezone(UTC).timestamp() for r in rows}


if __name__ == "__main__":
    main()
