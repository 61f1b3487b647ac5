"""The chaos run: the whole platform under a steady load of offers while processes are SIGKILLed,
the broker is away, PostgreSQL is away and the SMTP server refuses; then a reconciliation from the
databases and the SMTP sink: every offer event applied once in matching, every MatchFound turned
into exactly one delivery and every delivery mailed exactly once.

It runs a stack of its own (ports and databases apart from the test and bench stacks, moved by
``BR_TEST_SLOT``) with a project-local PostgreSQL and Redis under ``var/chaos*``: the shared
PostgreSQL and Redis of the machine are never stopped."""

from __future__ import annotations

import asyncio
import email
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import httpx

from deploy.local.stack import ROOT, SERVICES, Stack, StackConfig, port_open, stack_slot, wait_for
from runtime.outbox import resend_since as outbox_resend
from tests.bench.flow import TENANTS, offer_for, setup
from tests.platform import Platform

# Shorter retry waits than production's 5 s .. 30 min, so that a 60 s SMTP refusal is caught up within
# the run; still long enough that the 12 attempts (each wait drawn from the upper half of 2, 4, 8 … 30 s)
# span at least 2 minutes: with 1 .. 8 s, deliveries gave up during the refusal.
CHAOS_ENV = {"BR_RETRY_BASE_SECONDS": "2", "BR_RETRY_MAX_SECONDS": "30"}


def chaos_config() -> StackConfig:
    slot = stack_slot()
    config = StackConfig.for_tests(ROOT / "var" / f"chaos{slot or ''}")
    config.database_prefix = f"bildungsraum_chaos{slot or ''}"
    config.celery_queue = f"notifications-chaos{slot or ''}"
    config.redis_db = 0  # its own Redis server
    for name in ("catalog", "matching", "notifications", "identity", "issuer", "broker", "smtp"):
        config.ports[name] += 20_000
    # A PostgreSQL and a Redis of its own, started under var/: those are what the run stops.
    config.ports["postgres"] = 35_432 + 100 * slot
    config.ports["redis"] = 36_379 + 100 * slot
    return config


# After the broker is reachable again: a consumer's reconnect backoff (kafka-python's at most 1 s),
# its group's rejoin and a first fetch
CONSUMER_BACK_SECONDS = 5


@dataclass
class Fault:
    name: str
    act: Callable[[], None]  # does the damage and repairs it; returns when the platform should recover
    unready: tuple[str, ...] = ()  # services that must answer /readyz 503 while it lasts


@dataclass
class Report:
    offers_posted: int = 0
    post_failures: int = 0
    acknowledged: set[str] = field(default_factory=set)  # the ids of the offers the API answered 201 for
    faults: list[str] = field(default_factory=list)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)  # each fault's wall-clock span
    server_errors: Counter = field(default_factory=Counter)  # answers of 5xx but 503 (a dependency away)
    unready_seen: dict[str, set[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"offers acknowledged by the API: {self.offers_posted} (requests refused meanwhile: "
                 f"{self.post_failures}, of them server errors but 503: {sum(self.server_errors.values())})",
                 "faults: " + "; ".join(self.faults)]
        lines += [f"  not ready during {f}: {', '.join(sorted(s)) or '-'}" for f, s in self.unready_seen.items()]
        lines += [f"{k:>44}: {v}" for k, v in self.counts.items()]
        lines += ["PROBLEM: " + p for p in self.problems] or ["no loss, no duplicate"]
        return "\n".join(lines)


class ChaosRun:
    def __init__(self, *, rate: float, short: bool) -> None:
        self.rate, self.short = rate, short
        self.stack = Stack(chaos_config())
        self.config = self.stack.config
        self.platform = Platform(self.stack)
        self.report = Report()
        self._stop_load = threading.Event()
        self._started = time.monotonic()
        # room for a match (and a mail) from each offer of the whole run, so that every fault, the last
        # one too, meets new matches and mails (with 600, the demands were full after a minute and the
        # SMTP refusal met only what was left over)
        self.matches = 300 if short else 2_400

    # ---- the stack ----------------------------------------------------------------------------

    def start(self) -> None:
        os.environ.update(CHAOS_ENV)  # the children inherit it, restarted ones too
        for path in self.config.mail_dir.glob("*"):
            path.unlink()
        self.stack.ensure_postgres()
        self.stack.ensure_redis()
        if "postgres" not in self.stack.processes or "redis" not in self.stack.processes:
            raise RuntimeError("the chaos run needs PostgreSQL and Redis of its own: ports "
                               f"{self.config.ports['postgres']} / {self.config.ports['redis']} are taken")
        self.wait_postgres()
        self.stack.reset_databases()
        self.stack.start()

    def stop(self) -> None:
        self._stop_load.set()
        self.stack.stop_all()
        for name in CHAOS_ENV:
            os.environ.pop(name, None)

    def wait_postgres(self) -> None:
        """The port opens before the server takes connections (start-up, recovery)."""
        async def accepts() -> bool:
            conn = await asyncpg.connect(self.config.postgres_admin_url, timeout=2)
            await conn.close()
            return True

        wait_for("PostgreSQL accepting connections", lambda: asyncio.run(accepts()), timeout=60)

    # ---- load ---------------------------------------------------------------------------------

    def seed(self) -> None:
        # As the pipeline bench: each offer relevant to one demand of another tenant, from a provider
        # that demand has not heard of yet, so that each offer makes one match and one mail.
        self._providers, self._demands = setup(self.platform, self.matches)

    def _load(self) -> None:
        clients = {t: self.platform.client("catalog") for t in TENANTS}
        started, n = time.monotonic(), 0
        while not self._stop_load.is_set():
            tenant, body = offer_for(n, self._providers, self._demands)
            body["external_id"] = f"chaos-{n}"
            try:
                response = clients[tenant].post("/v1/offers", json=body, timeout=5, headers={
                    "Authorization": f"Bearer {self.platform.token(f'{tenant}-provider')}"})  # renewed in time
                if response.status_code == 201:
                    self.report.offers_posted += 1
                    self.report.acknowledged.add(response.json()["id"])
                else:
                    self.report.post_failures += 1
                    if response.status_code >= 500 and response.status_code != 503:  # 503: try again
                        self.report.server_errors[response.status_code] += 1
            except httpx.HTTPError:
                self.report.post_failures += 1  # the catalog is down or restarting: a client retries later
            n += 1
            time.sleep(max(0.0, started + n / self.rate - time.monotonic()))

    # ---- faults -------------------------------------------------------------------------------

    def _kill(self, name: str) -> Callable:
        def act() -> None:
            self.stack.kill(name)
            time.sleep(1)
            if name == "celery-worker":
                self.stack.start_worker()
            else:
                self.stack.start_service(name)
        return act

    def _broker_away(self, seconds: float) -> Callable:
        def act() -> None:
            self.stack.stop("broker", signal.SIGKILL)
            time.sleep(seconds)
            self.stack.start_broker()  # Tansu comes back empty: topics created again
            # What was published but not yet consumed by everyone is gone with the broker's memory:
            # every relay publishes again what it sent during the run (consumers drop what they had).
            # Only once the consumers are back: a consumer keeps its position in the lost log, and
            # fetching there from the new, empty one it is told that is past the end and starts from
            # the first event. Re-sent before that fetch, the new log was already longer than that
            # position, and the consumer went on from there, past what lay below it (the clean-clone
            # make test of 2026-12-08 00:49: six offers never reached matching). A real Kafka keeps
            # its log; the operator's command says the same (README, "Operator commands").
            for service in SERVICES:
                self.stack.wait_ready(service, timeout=90)
            time.sleep(CONSUMER_BACK_SECONDS)
            resend_since(self.config, time.monotonic() - self._started + 60)
        return act

    def _postgres_away(self, seconds: float) -> Callable:
        def act() -> None:
            self.stack.stop("postgres", signal.SIGINT)  # fast shutdown: clients are cut off
            time.sleep(seconds)
            self.stack.ensure_postgres()
            self.wait_postgres()
        return act

    def _smtp_refusing(self, seconds: float) -> Callable:
        """The first half, the server answers 451 to every message (up, but not taking mail); the
        second half it is gone (connections refused). A sender must retry on both. The first half
        lasts until the server has refused a message (30 s at most): the short form's thin load, its
        mail held back by retries after the outage before, once sent none in five seconds."""
        def refused_one(since: float) -> bool:
            async def count() -> int:
                conn = await asyncpg.connect(self.config.service_admin_url("notifications"), timeout=2)
                try:
                    return await conn.fetchval("SELECT count(*) FROM delivery_attempts WHERE smtp_code = 451"
                                               " AND at >= to_timestamp($1)", since)
                finally:
                    await conn.close()
            return asyncio.run(count()) > 0

        def act() -> None:
            began = time.time()
            self.stack.processes["smtp-sink"].send_signal(signal.SIGUSR1)
            time.sleep(seconds / 2)
            while not refused_one(began) and time.time() < began + seconds / 2 + 30:
                time.sleep(0.5)
            self.stack.stop("smtp-sink", signal.SIGKILL)
            time.sleep(seconds / 2)
            self.stack.start_smtp()
        return act

    def faults(self) -> list[Fault]:
        """The broker first: the local broker keeps nothing across its restart, so every relay sends
        again all it sent since the run began (as an operator would after a broker lost its data).
        Placed later, that re-send would also re-deliver what a kill before it had lost, and the
        reconciliation would not see the loss."""
        outage = 5 if self.short else None
        kills = ("matching", "celery-worker") if self.short else (*SERVICES, "celery-worker")
        faults = [Fault(f"broker away {outage or 20} s", self._broker_away(outage or 20), unready=SERVICES)]
        faults += [Fault(f"SIGKILL {name}", self._kill(name)) for name in kills]
        faults += [
            Fault(f"PostgreSQL away {outage or 10} s", self._postgres_away(outage or 10), unready=SERVICES),
            Fault(f"SMTP refusing {10 if self.short else 60} s", self._smtp_refusing(10 if self.short else 60)),
        ]
        return faults

    def _watch_readiness(self, fault: Fault, done: threading.Event) -> None:
        seen = self.report.unready_seen.setdefault(fault.name, set())
        while not done.is_set():
            for service in SERVICES:
                try:
                    if httpx.get(f"{self.config.url(service)}/readyz", timeout=2).status_code == 503:
                        seen.add(service)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)

    # ---- the run ------------------------------------------------------------------------------

    def run(self) -> Report:
        self.seed()
        self._started = time.monotonic()
        load = threading.Thread(target=self._load, daemon=True)
        load.start()
        time.sleep(3 if self.short else 10)
        for fault in self.faults():
            print(f"fault: {fault.name}", flush=True)
            done = threading.Event()
            watcher = threading.Thread(target=self._watch_readiness, args=(fault, done), daemon=True)
            watcher.start()
            began = time.time()
            fault.act()
            self.report.windows[fault.name] = (began, time.time())
            done.set()
            watcher.join()
            self.report.faults.append(fault.name)
            missing = set(fault.unready) - self.report.unready_seen[fault.name]
            if missing:
                self.report.problems.append(f"{', '.join(sorted(missing))} stayed ready during {fault.name}")
            # Recovered without a restart: every service ready again.
            for service in SERVICES:
                try:
                    self.stack.wait_ready(service, timeout=90)
                except Exception as exc:
                    self.report.problems.append(f"{service} not ready again after {fault.name}: {exc}")
            acknowledged = self.report.offers_posted
            time.sleep(2 if self.short else 5)
            if self.report.offers_posted == acknowledged:
                self.report.problems.append(f"no offer acknowledged in the seconds after {fault.name}:"
                                            " the load stopped")
        self._stop_load.set()
        load.join()
        if self.report.server_errors:  # a fault is a 503 to try again, never the server's own error
            self.report.problems.append("the API answered " + ", ".join(
                f"{n} × {status}" for status, n in sorted(self.report.server_errors.items())) + " during the faults")
        print("load stopped; waiting for the platform to settle …", flush=True)
        self.reconcile(settle_seconds=180 if self.short else 300)
        return self.report

    def reconcile(self, settle_seconds: float) -> None:
        smtp = next(span for name, span in self.report.windows.items() if name.startswith("SMTP"))
        # where a mail may go twice by design: the server took it, and the worker that sent it was
        # killed, or its database was away, before it could record that
        unrecorded = [span for name, span in self.report.windows.items()
                      if name == "SIGKILL celery-worker" or name.startswith("PostgreSQL")]
        deadline = time.monotonic() + settle_seconds
        previous = None
        while True:
            counts, problems = asyncio.run(count_everything(self.config, self.report.acknowledged, smtp, unrecorded))
            settled = not problems and counts == previous
            if settled or time.monotonic() > deadline:
                break
            previous = counts
            time.sleep(3)
        self.report.counts = counts
        self.report.problems += problems


async def _admin(config: StackConfig, service: str) -> asyncpg.Connection:
    return await asyncpg.connect(config.service_admin_url(service))


async def count_everything(config: StackConfig, acknowledged: set[str], smtp_away: tuple[float, float],
                           unrecorded: list[tuple[float, float]]) -> tuple[dict[str, int], list[str]]:
    """Counts from the databases (as the superuser: row-level security does not hide rows from it)
    and the SMTP sink, and what does not add up. ``acknowledged``: the offers the API answered 201
    for, each of which must be in the catalog and in matching's read model (the other checks start
    from the catalog's own rows, so an offer acknowledged and never stored would pass them)."""
    catalog, matching, notifications = [await _admin(config, s) for s in ("catalog", "matching", "notifications")]
    try:
        stored = {r["id"] for r in await catalog.fetch("SELECT id::text FROM offers WHERE id = ANY($1::uuid[])",
                                                       list(acknowledged))}
        known = {r["id"] for r in await matching.fetch("SELECT id::text FROM offers WHERE id = ANY($1::uuid[])",
                                                       list(acknowledged))}
        # attempts the SMTP refusal failed, by the server's 451 and by its closed port: it met mail traffic
        refused, closed = await notifications.fetchrow(
            "SELECT count(*) FILTER (WHERE smtp_code = 451), count(*) FILTER (WHERE smtp_code IS NULL)"
            " FROM delivery_attempts WHERE outcome = 'temporary_failure'"
            " AND at BETWEEN to_timestamp($1) AND to_timestamp($2)", *smtp_away)
        offer_events = {r["event_id"] for r in await catalog.fetch(
            "SELECT event_id::text FROM outbox WHERE topic = 'catalog.offers.v1'")}
        offers = await catalog.fetchval("SELECT count(*) FROM offers")
        applied = {r["event_id"] for r in await matching.fetch(
            "SELECT event_id FROM inbox WHERE consumer = 'matching' AND event_type LIKE '%.offer.%'")}
        read_model = await matching.fetchval("SELECT count(*) FROM offers")
        found = {r["event_id"]: r["match"] for r in await matching.fetch(
            "SELECT event_id::text, convert_from(payload, 'UTF8')::jsonb->>'id' AS match FROM outbox"
            " WHERE event_type LIKE '%.match.found.%'")}
        received = {r["event_id"] for r in await notifications.fetch(
            "SELECT event_id FROM inbox WHERE consumer = 'notifications' AND event_type LIKE '%.match.found.%'")}
        match_status = {str(r["id"]): r["status"] for r in await matching.fetch("SELECT id, status FROM matches")}
        deliveries = {str(r["id"]): (r["status"], str(r["match_id"])) for r in await notifications.fetch(
            "SELECT id, status, match_id FROM deliveries")}
        delivered_matches = {str(r["match_id"]) for r in await notifications.fetch(
            "SELECT DISTINCT match_id FROM deliveries")}
    finally:
        for conn in (catalog, matching, notifications):
            await conn.close()
    mails: Counter[str] = Counter()
    message_ids: dict[str, set[str]] = {}
    first_copy: dict[str, float] = {}  # when the sink kept a delivery's first mail
    for path in config.mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes())
        if delivery := message.get("X-Bildungsraum-Delivery"):
            mails[delivery] += 1
            message_ids.setdefault(delivery, set()).add(message.get("Message-ID"))
            first_copy[delivery] = min(first_copy.get(delivery, float("inf")), path.stat().st_mtime)
    sent = {d for d, (status, _) in deliveries.items() if status == "sent"}
    # A match retracted before its mail went out (a better offer took its place while the SMTP server
    # refused) is rightly never mailed; one that holds at the end must have been.
    withdrawn = {d for d, (status, match) in deliveries.items()
                 if status == "cancelled" and match_status.get(match) == "retracted"}
    counts = {
        "offers in catalog": offers,
        "offer events written by catalog": len(offer_events),
        "offer events applied by matching": len(applied & offer_events),
        "offers in matching's read model": read_model,
        "MatchFound events written by matching": len(found),
        "MatchFound events received by notifications": len(received & set(found)),
        "deliveries": len(deliveries),
        "deliveries sent": len(sent),
        "attempts the SMTP server answered 451": refused,
        "attempts the SMTP server was gone for": closed,
        "deliveries cancelled, their match retracted before the mail": len(withdrawn),
        "mails in the SMTP sink": sum(mails.values()),
        "deliveries mailed twice or more": sum(1 for n in mails.values() if n > 1),
        "  of which the same Message-ID repeated": sum(
            1 for d, n in mails.items() if n > 1 and len(message_ids[d]) == 1),
        "  of which first sent while the worker was killed or PostgreSQL away": sum(
            1 for d, n in mails.items() if n > 1 and len(message_ids[d]) == 1
            and any(start - 2 <= first_copy[d] <= end + 2 for start, end in unrecorded)),
    }
    problems = []
    if lost := acknowledged - stored:
        problems.append(f"{len(lost)} offers acknowledged by the API missing from the catalog")
    if lost := acknowledged - known:
        problems.append(f"{len(lost)} offers acknowledged by the API missing from matching's read model")
    if not refused or not closed:
        problems.append(f"the SMTP fault met too little mail: {refused} attempts answered 451, {closed} refused"
                        " a connection")
    if lost := offer_events - applied:
        problems.append(f"{len(lost)} offer events never applied by matching")
    if read_model != offers:
        problems.append(f"matching knows {read_model} offers, catalog has {offers}")
    if lost := set(found) - received:
        problems.append(f"{len(lost)} MatchFound events never received by notifications")
    if lost := set(found.values()) - delivered_matches:
        problems.append(f"{len(lost)} matches without a delivery")
    if unsent := {d: s for d, (s, _) in deliveries.items() if s != "sent" and d not in withdrawn}:
        problems.append(f"{len(unsent)} deliveries not sent: {dict(Counter(unsent.values()))}")
    if lost := sent - set(mails):
        problems.append(f"{len(lost)} deliveries marked sent without a mail in the sink")
    if doubled := {d: n for d, n in mails.items() if n > 1}:
        problems.append(f"{len(doubled)} deliveries mailed more than once")
    if stray := set(mails) - set(deliveries):
        problems.append(f"{len(stray)} mails without a delivery")
    return counts, problems


def resend_since(config: StackConfig, seconds: float) -> None:
    """After the in-memory broker lost its contents: every relay publishes again what it sent lately
    (the operator command ``python -m runtime outbox-resend``, here for each service database)."""
    async def resend() -> None:
        for service in SERVICES:
            conn = await _admin(config, service)
            try:
                await outbox_resend(conn, seconds)
            finally:
                await conn.close()

    wait_for("PostgreSQL", lambda: port_open(config.host, config.ports["postgres"]))
    asyncio.run(resend())
