"""`make bench-matching`: matching at scale, against a brute-force reference in the same run.

Generates N offers (tests/bench/catalog_data.py: real course topics, 1–3 sessions at German towns,
three networks, home/networks/all visibility) straight into matching's read model (offers, session
rows, vectors), and M open demands (demands and their keys). Vectors come from the real encoder,
once per distinct text (288 offer texts, 96 demand texts) with a little noise per record, so that
loading a national catalogue does not take a day of encoding. Then, with the stack running:

- ``POST /v1/demands`` (encoding, hard constraints, ranking, matches, events) and then
  ``GET /v1/demands/{id}/offers`` (the ranked top 20): p50/p99 of each and of both together, first
  one demand right after another, then as many again arriving at ``--rate`` a second;
- an offer change put on ``catalog.offers.v1`` as the catalog would, until matching has committed
  all its MatchFound/MatchRetracted events (its inbox row commits with them): p50/p99 and events;
- the brute-force reference: every offer checked against the six constraints and every feasible
  one ranked, in Python, for a sample of the same demands, and every demand checked and ranked
  against a changed offer; with the overlap of its top 20 and matching's, and the hard-constraint
  violations among what matching returned (must be 0);
- how long a fresh process takes to load the vector index from PostgreSQL (a restart re-encodes nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import pickle
import random
import statistics
import time
import uuid
from datetime import date, timedelta

import asyncpg
import httpx
import numpy as np
from kafka import KafkaProducer

from contracts import OFFER_UPDATED, OFFERS_TOPIC
from deploy.local.stack import Stack
from runtime.events import Event
from services.matching import clusters, geo, relevance
from services.matching.domain import LOCATED_FORMATS, check
from services.matching.index import OfferIndex, from_bytes, to_bytes
from tests.bench.catalog import configure_postgres
from tests.bench.catalog_data import ADDITIONS, TENANTS, TOPICS, offer_rows, towns
from tests.bench.flow import bench_config
from tests.platform import Platform, server_timing

PHRASES = ["Wir suchen {t} für unsere Beschäftigten.", "{n} Mitarbeitende sollen {t} machen.",
           "Qualifizierung {t} gesucht, gern in Teilzeit.", "Unser Betrieb braucht {t} – mit Prüfung."]
DEMAND_FORMATS = [["presence"]] * 5 + [["presence", "hybrid"]] * 2 + [["online", "distance"]] + [["presence", "online"]]


def state_of(o: dict) -> dict:
    """A generated offer in the shape of catalog.offers.v1."""
    return {
        "id": str(o["id"]), "tenant": o["tenant"], "provider_id": str(o["provider_id"]),
        "external_id": o["external_id"], "title": o["title"], "description": o["description"],
        "skills": o["skills"], "qualification": o["qualification"], "format": o["format"],
        "schedule": o["schedule"], "hours": o["hours"], "price_eur": o["price_eur"], "funding": o["funding"],
        "occupation_codes": o["occupation_codes"], "language": "de", "status": o["status"], "version": 1,
        "visibility": {"scope": o["scope"], "networks": o["networks"]},
        "sessions": [{"start": s["start"].isoformat(), "end": s["end"].isoformat(),
                      "location": None if s["lat"] is None else {"zip": s["zip"], "city": s["city"],
                                                                  "lat": s["lat"], "lon": s["lon"]}}
                     for s in o["sessions"]],
    }


def noisy(vector: np.ndarray, rng: np.random.Generator, sigma: float = 0.01) -> np.ndarray:
    v = vector + rng.normal(0, sigma, vector.shape).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def demand_rows(m: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    places = towns()
    today = date.today()
    out = []
    for i in range(m):
        title, skills, sentence, _, _ = TOPICS[rng.randrange(len(TOPICS))]
        phrase = rng.randrange(len(PHRASES))
        name, lat, lon = places[int(rng.paretovariate(1.2)) % len(places)]
        start = date(2027, 1, 4) + timedelta(days=rng.randrange(420))
        out.append({
            "phrase": phrase, "topic": title,
            "body": {
                "employer": {"name": f"Betrieb {i}", "employees": rng.choice([8, 35, 120, 600]),
                             "zip": None, "city": name, "lat": lat + rng.uniform(-0.05, 0.05),
                             "lon": lon + rng.uniform(-0.05, 0.05), "share_contact": rng.random() < 0.5},
                "title": PHRASES[phrase].format(t=title, n=rng.randint(2, 9)),
                "description": sentence, "skills": rng.sample(skills, 2), "participants": rng.randint(1, 12),
                "start_from": max(start, today + timedelta(days=1)).isoformat(),
                "start_to": (start + timedelta(days=rng.choice([60, 90, 120]))).isoformat(),
                "formats": rng.choice(DEMAND_FORMATS), "schedules": rng.sample(["full_time", "part_time"], 1),
                "max_distance_km": rng.choice([25, 50, 50, 100]),
                "max_price_eur": rng.choice([None, None, 1500, 5000, 20000]),
                "funding_required": rng.random() < 0.15,
            },
            "tenant": TENANTS[i % len(TENANTS)],
        })
    return out


def encode_pools(offers: list[dict], demands: list[dict]) -> tuple[dict, dict]:
    """One real encoding per distinct offer title and per demand (topic, phrasing)."""
    encoder = relevance.load_encoder()
    offer_texts: dict[str, str] = {}
    for o in offers:
        offer_texts.setdefault(o["title"], relevance.offer_text({**o, "description": o["description"][:200]}))
    keys = list(offer_texts)
    started = time.perf_counter()
    offer_vectors = dict(zip(keys, encoder.encode([offer_texts[k] for k in keys], "passage"), strict=True))
    demand_texts: dict[tuple, str] = {}
    for d in demands:
        demand_texts.setdefault((d["topic"], d["phrase"]), relevance.demand_text(d["body"]))
    dkeys = list(demand_texts)
    demand_vectors = dict(zip(dkeys, encoder.encode([demand_texts[k] for k in dkeys], "query"), strict=True))
    print(f"  encoded {len(keys)} offer and {len(dkeys)} demand texts in {time.perf_counter() - started:.0f} s",
          flush=True)
    return offer_vectors, demand_vectors


async def load(admin_dsn: str, offers: list[dict], demands: list[dict], offer_vectors: dict,
               demand_vectors: dict) -> None:
    rng = np.random.default_rng(1)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SET session_replication_role = replica")
        offer_recs, session_recs, vector_recs = [], [], []
        for seq, o in enumerate(offers, 1):
            vector = noisy(offer_vectors[o["title"]], rng)
            cluster = clusters.NAMES.get(o["occupation_codes"][0][:2], clusters.UNKNOWN)
            starts = [s["start"] for s in o["sessions"]]
            offer_recs.append((uuid.UUID(o["id"]), o["tenant"], uuid.UUID(o["provider_id"]), o["external_id"],
                               o["title"], o["format"], o["price_eur"], o["funding"]["qcg"],
                               o["visibility"]["scope"], o["visibility"]["networks"], o["status"], 1,
                               json.dumps(o), date.fromisoformat(min(starts)), date.fromisoformat(max(starts)),
                               cluster, o["format"] in ("online", "distance")))
            for n, s in enumerate(o["sessions"]):
                loc = s["location"]
                located = o["format"] in LOCATED_FORMATS and loc is not None
                session_recs.append((
                    uuid.UUID(o["id"]), n, o["tenant"], o["status"], o["visibility"]["scope"],
                    o["visibility"]["networks"], o["format"], o["price_eur"], o["funding"]["qcg"],
                    date.fromisoformat(s["start"]), loc and loc["lat"], loc and loc["lon"],
                    geo.cell(loc["lat"], loc["lon"]) if located else None, loc and loc["city"],
                    geo.region_of_point(round(loc["lat"], 1), round(loc["lon"], 1)) if loc else None))
            vector_recs.append((uuid.UUID(o["id"]), "bench", to_bytes(vector), seq))
        await conn.copy_records_to_table("offers", records=offer_recs, columns=[
            "id", "tenant_id", "provider_id", "external_id", "title", "format", "price_eur", "qcg",
            "visibility_scope", "visibility_networks", "status", "version", "state", "first_start", "last_start",
            "skill_cluster", "remote"])
        await conn.copy_records_to_table("offer_sessions", records=session_recs, columns=[
            "offer_id", "n", "tenant_id", "status", "visibility_scope", "visibility_networks", "format", "price_eur",
            "qcg", "start_date", "lat", "lon", "cell", "city", "region"])
        await conn.copy_records_to_table("offer_vectors", records=vector_recs,
                                         columns=["offer_id", "text_hash", "vector", "change_seq"])
        await conn.execute("SELECT setval('offer_vector_seq', $1)", len(offers))
        demand_recs, key_recs = [], []
        for d in demands:
            body, tenant = d["body"], d["tenant"]
            demand_id = uuid.uuid4()
            state = {"id": str(demand_id), "tenant": tenant, "status": "open", "owner": f"{tenant}-firma-1",
                     **body}
            d["id"], d["state"] = str(demand_id), state
            vector = noisy(demand_vectors[(d["topic"], d["phrase"])], rng)
            d["vector"] = from_bytes(to_bytes(vector))
            demand_recs.append((demand_id, tenant, "bench", state["owner"], "open", body["formats"],
                                date.fromisoformat(body["start_from"]), date.fromisoformat(body["start_to"]),
                                json.dumps(state), to_bytes(vector), body["participants"], to_bytes(vector)))
            employer = body["employer"]
            cells = geo.cells_of_box(*geo.box(employer["lat"], employer["lon"], body["max_distance_km"]))
            for fmt in sorted(set(body["formats"])):
                for c in (cells if fmt in LOCATED_FORMATS and cells is not None else [geo.WIDE]):
                    key_recs.append((demand_id, tenant, fmt, c, date.fromisoformat(body["start_from"]),
                                     date.fromisoformat(body["start_to"]), body["max_price_eur"],
                                     body["funding_required"]))
        await conn.copy_records_to_table("demands", records=demand_recs, columns=[
            "id", "tenant_id", "created_by", "owner", "status", "formats", "start_from", "start_to", "state", "vector",
            "participants", "ranking_vector"])  # (the plain vector: expanding 10,000 rankings at load is too slow)
        await conn.copy_records_to_table("demand_keys", records=key_recs, columns=[
            "demand_id", "tenant_id", "format", "cell", "start_from", "start_to", "max_price_eur",
            "funding_required"])
        await conn.execute("ANALYZE offers; ANALYZE offer_sessions; ANALYZE offer_vectors; ANALYZE demands;"
                           " ANALYZE demand_keys")
    finally:
        await conn.close()


def quantiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms; one sample (``--reference 1``) is both."""
    if len(samples) < 2:
        return samples[0] * 1000, samples[0] * 1000
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000


def demand_requests(platform: Platform, demands: list[dict], count: int, rate: float = 0.0
                    ) -> tuple[dict, list[tuple[dict, list]]]:
    """POST each demand, then its ranked top 20; the times of each and both. With a ``rate``, the
    demands arrive at that many a second, each timed from when it was due (so one that had to wait
    for the last counts its wait); without, each right after the last one's top 20, while the stack
    still announces and mails that one's matches."""
    times: dict[str, list[float]] = {"POST /v1/demands": [], "… of it encoding the text": [],
                                     "… of it matching": [], "… of it committing": [],
                                     "… of it the rest (HTTP, token, waiting)": [],
                                     "GET …/offers (top 20)": [], "both": []}
    due = time.perf_counter()
    ranked = []
    clients = {t: httpx.Client(base_url=platform.config.url("matching"), timeout=60,
                               headers={"Authorization": f"Bearer {platform.token(f'{t}-employer')}"})
               for t in TENANTS}
    for d in demands[:count]:
        api = clients[d["tenant"]]
        t0 = time.perf_counter()
        if rate:
            due += 1 / rate
            time.sleep(max(0.0, due - t0))
            t0 = due
        made = api.post("/v1/demands", json=d["body"])
        t1 = time.perf_counter()
        assert made.status_code == 201, made.text
        top = api.get(f"/v1/demands/{made.json()['id']}/offers", params={"page_size": 20})
        t2 = time.perf_counter()
        assert top.status_code == 200, top.text
        times["POST /v1/demands"].append(t1 - t0)
        spans = server_timing(made.headers["server-timing"])
        encode, match, commit = (spans[step] / 1000 for step in ("encode", "match", "commit"))
        times["… of it encoding the text"].append(encode)
        times["… of it matching"].append(match)
        times["… of it committing"].append(commit)
        times["… of it the rest (HTTP, token, waiting)"].append(t1 - t0 - encode - match - commit)
        times["GET …/offers (top 20)"].append(t2 - t1)
        times["both"].append(t2 - t0)
        ranked.append((made.json(), top.json()))
    for api in clients.values():
        api.close()
    return times, ranked


def brute_force_demand(demand: dict, offers: list[dict], vectors: np.ndarray, demand_vector: np.ndarray
                       ) -> tuple[list[str], int]:
    """The reference: every offer checked, every feasible one ranked (no index, no SQL)."""
    feasible = []
    for i, offer in enumerate(offers):
        f = check(offer, demand)
        if f.ok:
            feasible.append((offer, f, vectors[i]))
    if not feasible:
        return [], 0
    plain = np.asarray(demand_vector, dtype=np.float32)
    expanded = from_bytes(to_bytes(relevance.expand_query(plain, np.stack([v for _, _, v in feasible]))))
    ranked = relevance.rank(demand, feasible, expanded, plain_vector=plain)
    return [r.offer_id for r in ranked[:20]], len(feasible)


async def offer_changes(platform: Platform, admin_dsn: str, offers: list[dict], demands: list[dict],
                        count: int, seed: int) -> tuple[list[float], list[int], list[float]]:
    """Offer changes as the catalog publishes them; time until matching committed their events. Each
    change turns a located offer shared with all networks into the topic of nearby open demands."""
    rng = random.Random(seed)
    producer = KafkaProducer(bootstrap_servers=platform.config.bootstrap, acks="all")
    conn = await asyncpg.connect(admin_dsn)
    times, events, reference = [], [], []
    by_town: dict[str, list[dict]] = {}
    for d in demands:
        by_town.setdefault(d["body"]["employer"]["city"], []).append(d)
    candidates = [o for o in offers if o["visibility"]["scope"] == "all" and o["format"] == "presence"
                  and o["status"] == "published" and o["sessions"][0]["location"]["city"] in by_town]
    demand_states = [d["state"] | {"id": d["id"]} for d in demands]
    try:
        for _ in range(count):
            offer = rng.choice(candidates)
            nearby = by_town[offer["sessions"][0]["location"]["city"]]
            wanted = rng.choice(nearby)["topic"]
            topic = next(t for t in TOPICS if t[0] == wanted)
            version = await conn.fetchval("SELECT version FROM offers WHERE id = $1", uuid.UUID(offer["id"]))
            changed = {**offer, "title": f"{topic[0]} {rng.choice(ADDITIONS)}", "skills": topic[1],
                       "description": topic[2], "version": version + 1, "price_eur": 390,
                       "sessions": [{**s, "start": demand["body"]["start_from"]} for s, demand in
                                    zip(offer["sessions"], [rng.choice(nearby)] * 3, strict=False)]}
            offer.update(changed)
            event = Event(OFFER_UPDATED, "catalog", offer["tenant"], offer["id"], changed)
            t0 = time.perf_counter()
            producer.send(OFFERS_TOPIC, key=offer["id"].encode(), value=event.value(), headers=event.headers())
            producer.flush()
            await _committed(conn, event.id)
            times.append(time.perf_counter() - t0)
            events.append(await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE topic = 'matching.matches.v1'"
                " AND convert_from(payload, 'UTF8')::jsonb -> 'offer' ->> 'id' = $1", offer["id"]))
            # the reference: this offer against every open demand, checked and ranked one by one
            vector = relevance.load_encoder().encode([relevance.offer_text(changed)], "passage")[0]
            r0 = time.perf_counter()
            for d, state in zip(demands, demand_states, strict=True):
                f = check(changed, state)
                if f.ok:
                    relevance.announce(relevance.rank(state, [(changed, f, vector)], d["vector"]))
            reference.append(time.perf_counter() - r0)
    finally:
        producer.close()
        await conn.close()
    return times, events, reference


async def _committed(conn: asyncpg.Connection, event_id: str) -> None:
    """Until matching's inbox row for the event is committed (with the events it wrote)."""
    for _ in range(30_000):
        if await conn.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", event_id):
            return
        await asyncio.sleep(0.002)
    raise TimeoutError(f"event {event_id} not handled within a minute")


async def index_load(app_dsn: str) -> tuple[float, int]:
    conn = await asyncpg.connect(app_dsn)
    try:
        index = OfferIndex()
        t0 = time.perf_counter()
        await index.sync(conn)
        return time.perf_counter() - t0, len(index)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=100_000)
    parser.add_argument("--demands", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="demands posted through HTTP")
    parser.add_argument("--warmup", type=int, default=5,
                        help="of the demands posted, how many first are not measured (the service and its "
                             "database have just started: their first requests bring the data into memory)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="then as many demands again, arriving at this many a second (0: not)")
    parser.add_argument("--changes", type=int, default=30, help="offer changes through the broker")
    parser.add_argument("--reference", type=int, default=30, help="demands ranked by brute force")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the offers and demands the last run loaded (same --offers and --demands)")
    parser.add_argument("--seed", type=int, default=3,
                        help="which offers change (give a new one with --reuse: the last run changed its own)")
    args = parser.parse_args()
    stack = Stack(bench_config())
    configure_postgres(stack)  # its own, under var/bench, with memory for a million offers
    kept = stack.config.var_dir / f"matching-{args.offers}-{args.demands}.pickle"
    reuse = args.reuse and kept.exists() and asyncio.run(_loaded_offers(stack)) == args.offers
    if not reuse:  # (another bench may have reset the databases meanwhile)
        kept.unlink(missing_ok=True)
        stack.reset_databases()
    print("starting the stack …", flush=True)
    stack.start()
    platform = Platform(stack)
    c = stack.config
    admin_dsn = c.service_admin_url("matching")
    app_dsn = f"postgresql://br_matching_app@{c.host}:{c.ports['postgres']}/{c.database_prefix}_matching"
    rows: list[tuple[str, str]] = []
    try:
        started = time.perf_counter()
        offers = [state_of(o) for o in offer_rows(args.offers)]
        demands = demand_rows(args.demands + 2 * args.requests)
        posted, loaded = demands[args.demands:], demands[: args.demands]
        if reuse:  # the loaded demands' ids, states and vectors, as the last run loaded them
            loaded = pickle.loads(kept.read_bytes())
            changed = asyncio.run(_changed_offers(admin_dsn))  # and the offers the last runs changed, as now
            offers = [changed.get(o["id"], o) for o in offers]
            print(f"  reusing the {len(offers)} offers and {len(loaded)} open demands of the last run", flush=True)
        else:
            offer_vectors, demand_vectors = encode_pools(offers, demands)
            asyncio.run(load(admin_dsn, offers, loaded, offer_vectors, demand_vectors))
            kept.write_bytes(pickle.dumps(loaded))
            print(f"  {len(offers)} offers and {len(loaded)} open demands loaded in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        seconds, size = asyncio.run(index_load(app_dsn))
        rows.append(("vector index loaded from PostgreSQL by a fresh process", f"{seconds:.2f} s for {size} offers"))
        print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
        # This process holds the million offers and the demands it generated (some 8 GB of objects):
        # left to the garbage collector, a full collection walks them all on the cores the services
        # share while they are being measured.
        gc.freeze()
        # the service reads the loaded offers into its index when asked whether it is ready, as a
        # deployment asks before it sends traffic (a first request would otherwise wait for it)
        ready = httpx.get(f"{platform.config.url('matching')}/readyz", timeout=600)
        assert ready.status_code == 200, ready.text
        print(f"  posting {args.requests} demands …", flush=True)
        demand_requests(platform, posted, args.warmup)
        times, ranked = demand_requests(platform, posted[args.warmup:], args.requests - args.warmup)
        for name, samples in times.items():
            p50, p99 = quantiles(samples)
            rows.append((name, f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (n={len(samples)})"))
            print(f"  {name}: {rows[-1][1]}", flush=True)
        slowest = sorted(range(len(times["both"])), key=times["both"].__getitem__)[-5:]
        rows.append(("the five slowest demands: which of the measured ones, and their times",
                     ", ".join(f"{i + 1}. ({times['both'][i] * 1000:.0f} ms)" for i in sorted(slowest))))
        print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
        if args.rate:
            paced, _ = demand_requests(platform, posted[args.requests:], args.requests - args.warmup, args.rate)
            for name, samples in paced.items():
                p50, p99 = quantiles(samples)
                rows.append((f"{name}, {args.rate:g} demands a second",
                             f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (n={len(samples)})"))
                print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
        # brute force on a sample of the same demands, with the same vectors the service stored
        stored = asyncio.run(_stored_vectors(admin_dsn))
        vectors = np.stack([stored[o["id"]] for o in offers])
        bf_times, overlaps, violations, counts = [], [], 0, []
        by_id = {o["id"]: o for o in offers}
        for made, top in ranked[: args.reference]:
            demand_vector = asyncio.run(_demand_vector(admin_dsn, made["id"]))
            t0 = time.perf_counter()
            reference_top, feasible = brute_force_demand(made, offers, vectors, demand_vector)
            bf_times.append(time.perf_counter() - t0)
            mine = [i["offer_id"] for i in top["items"]]
            violations += sum(not check(by_id[i], made).ok for i in mine)
            counts.append((top["total"], feasible))
            if reference_top:
                overlaps.append(len(set(mine) & set(reference_top)) / min(20, len(reference_top)))
        p50, p99 = quantiles(bf_times)
        rows.append(("brute force: every offer checked and ranked for one demand",
                     f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (n={len(bf_times)})"))
        rows.append(("top 20 shared with brute force", f"{statistics.mean(overlaps):.3f} (mean over {len(overlaps)})"))
        rows.append(("feasible offers found: matching = brute force",
                     f"{sum(a == b for a, b in counts)} of {len(counts)} demands "
                     f"(median {statistics.median(b for _, b in counts):.0f} feasible)"))
        rows.append(("hard-constraint violations in matching's top 20", str(violations)))
        for row in rows[-4:]:
            print(f"  {row[0]}: {row[1]}", flush=True)
        change_times, change_events, reference = asyncio.run(
            offer_changes(platform, admin_dsn, offers, loaded, args.changes, args.seed))
        p50, p99 = quantiles(change_times)
        rows.append(("offer change → all its match events written",
                     f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (n={len(change_times)}, "
                     f"{statistics.mean(change_events):.1f} events on average, max {max(change_events)})"))
        p50, p99 = quantiles(reference)
        rows.append(("brute force: one changed offer checked and ranked against every open demand",
                     f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"))
        for row in rows[-2:]:
            print(f"  {row[0]}: {row[1]}", flush=True)
    finally:
        stack.stop_all()
    print(f"\n{args.offers} offers, {args.demands} open demands, 3 networks\n\n| what | figure |\n|---|---|")
    for name, figure in rows:
        print(f"| {name} | {figure} |")


async def _loaded_offers(stack: Stack) -> int:
    """How many offers matching's bench database holds (0 where it is gone)."""
    c = stack.config
    try:
        conn = await asyncpg.connect(c.service_admin_url("matching"))
    except asyncpg.InvalidCatalogNameError:
        return 0
    try:
        return await conn.fetchval("SELECT count(*) FROM offers")
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def _changed_offers(dsn: str) -> dict[str, dict]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, state FROM offers WHERE version > 1")
        return {str(r["id"]): json.loads(r["state"]) for r in rows}
    finally:
        await conn.close()


async def _stored_vectors(dsn: str) -> dict[str, np.ndarray]:
    conn = await asyncpg.connect(dsn)
    try:
        return {str(r["offer_id"]): from_bytes(r["vector"])
                for r in await conn.fetch("SELECT offer_id, vector FROM offer_vectors")}
    finally:
        await conn.close()


async def _demand_vector(dsn: str, demand_id: str) -> np.ndarray:
    conn = await asyncpg.connect(dsn)
    try:
        return from_bytes(await conn.fetchval("SELECT vector FROM demands WHERE id = $1", uuid.UUID(demand_id)))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
