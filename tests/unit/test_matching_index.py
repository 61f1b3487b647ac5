"""The in-process offer index and the two-step meaning step of ranking: above SHORTLIST feasible
offers, every offer is scored on 8-bit codes first and only the best on their exact vectors; the
demand's best offers and its expanded vector must be those the exact step gives."""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta

import numpy as np

from services.matching import relevance
from services.matching.domain import LOCATED_FORMATS, check
from services.matching.handlers import SHORTLIST, STAGE_TWO, best_by_meaning, meaning_step
from services.matching.index import DIM, VECTOR_DTYPE, OfferIndex, _order_key, from_bytes, to_bytes


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _catalogue(offers: int, topics: int = 40, seed: int = 7) -> tuple[OfferIndex, list[str], np.ndarray, np.ndarray]:
    """Offers around a few topics, as a sentence encoder places courses: every text shares one
    direction (unrelated courses still have a cosine of about 0.7, as with e5), and neighbours
    within a topic are near (about 0.85, above expand_query's floor)."""
    rng = np.random.default_rng(seed)
    shared = _unit(rng.standard_normal(DIM))
    centres = _unit(shared + 0.6 * _unit(rng.standard_normal((topics, DIM))))
    topic = rng.integers(0, topics, offers)
    vectors = _unit(centres[topic] + 0.4 * _unit(rng.standard_normal((offers, DIM))))
    stored = np.frombuffer(b"".join(to_bytes(v) for v in vectors), dtype=VECTOR_DTYPE).reshape(offers, DIM)
    ids = [f"offer-{n}" for n in range(offers)]
    index = OfferIndex()
    for start in range(0, offers, 5000):  # in batches, as sync reads them
        index._put(ids[start:start + 5000], stored[start:start + 5000])
    return index, ids, centres, rng


def _keys(rows: np.ndarray) -> np.ndarray:
    return np.arange(len(rows), dtype=np.uint64)


def _exact_step(index: OfferIndex, rows: np.ndarray, plain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    matrix = index.vectors_at(rows)
    expanded = from_bytes(to_bytes(relevance.expand_query(plain, matrix)))
    return expanded, matrix @ expanded


def test_codes_are_close_to_the_exact_cosines() -> None:
    index, ids, centres, rng = _catalogue(6000)
    rows = index.rows(ids)
    query = _unit(centres[3] + 0.05 * rng.standard_normal(DIM))
    exact = index.vectors_at(rows) @ query
    assert np.abs(index.codes(rows).scores(query) - exact).max() < 0.01


def test_codes_answer_in_the_order_asked() -> None:
    index, ids, centres, rng = _catalogue(6000)
    asked = [ids[i] for i in rng.permutation(len(ids))[:4000]] + ["offer-not-yet-synced"]
    rows = index.rows(asked)
    query = _unit(centres[7] + 0.05 * rng.standard_normal(DIM))
    scores = index.codes(rows).scores(query)
    assert np.abs(scores[:-1] - index.vectors_at(rows[:-1]) @ query).max() < 0.01
    assert scores[-1] == 0.0  # an offer not held yet scores 0 on the codes


def test_the_two_steps_keep_the_exact_best_offers_and_expansion() -> None:
    index, ids, centres, rng = _catalogue(30_000)
    feasible = rng.choice(len(ids), 12_000, replace=False)  # a demand's feasible offers, in no order
    rows = index.rows([ids[i] for i in feasible])
    assert len(rows) > SHORTLIST  # else the codes are not used at all
    for topic in (0, 11, 29):
        plain = _unit(centres[topic] + 0.3 * _unit(rng.standard_normal(DIM)))
        assert float(relevance.expand_query(plain, index.vectors_at(rows)) @ plain) < 0.99  # it does expand
        expanded, first = meaning_step(index, rows, plain, {}, np.array([], dtype=np.int64), _keys(rows))
        expanded_ref, first_ref = _exact_step(index, rows, plain)
        assert np.allclose(expanded, expanded_ref, atol=2e-3)
        best = set(np.argsort(-first, kind="stable")[:STAGE_TWO].tolist())
        best_ref = set(np.argsort(-first_ref, kind="stable")[:STAGE_TWO].tolist())
        assert best == best_ref
        top = sorted(best)
        assert np.allclose(first[top], first_ref[top], atol=1e-3)  # the best are scored exactly


def test_a_vector_the_index_does_not_hold_yet_is_scored_exactly() -> None:
    index, ids, centres, rng = _catalogue(5000)
    new_vector = _unit(centres[5] + 0.01 * rng.standard_normal(DIM))
    rows = index.rows([*ids, "offer-not-yet-synced"])
    assert rows[-1] == -1
    plain = _unit(centres[5] + 0.02 * rng.standard_normal(DIM))
    position = len(rows) - 1
    expanded, first = meaning_step(index, rows, plain, {position: new_vector}, np.array([position]), _keys(rows))
    assert abs(first[position] - float(new_vector @ expanded)) < 1e-5
    assert first[position] > 0.8  # the changed offer counts with its new vector, not as unknown (0)


def test_offers_beyond_the_first_capacity_keep_their_vectors() -> None:
    index, ids, _, _ = _catalogue(3000)  # the index starts with room for 1024 and grows
    replaced = _unit(np.ones((1, DIM)))
    index._put([ids[2500]], np.frombuffer(to_bytes(replaced[0]), dtype=VECTOR_DTYPE).reshape(1, DIM))
    assert len(index) == 3000
    vectors, known = index.vectors([ids[2500], "unknown"])
    assert known.tolist() == [True, False]
    assert np.allclose(vectors[0], replaced[0], atol=1e-3) and not vectors[1].any()
    assert abs(index.codes(index.rows([ids[2500]])).scores(replaced[0])[0] - 1.0) < 0.01


# ---- the hard constraints over columns -------------------------------------------------------------

TENANTS = ["hellweg", "ruhr", "lueneburg", "muenster"]
FORMATS = ["presence", "hybrid", "blended", "online", "distance"]


def _offer(rng: random.Random, n: int) -> dict:
    scope = rng.choice(["home", "networks", "all"])
    sessions = []
    for _ in range(rng.randint(0, 3)):
        start = date(2027, 1, 1) + timedelta(days=rng.randrange(200))
        place = None if rng.random() < 0.2 else {
            "city": rng.choice(["Soest", "Dortmund", "Lüneburg", "Arnsberg"]),
            "lat": rng.uniform(50.5, 53.5), "lon": rng.uniform(7.0, 10.5)}
        sessions.append({"start": start.isoformat(), "end": start.isoformat(), "location": place})
    return {"id": str(uuid.UUID(int=rng.getrandbits(128))), "tenant": rng.choice(TENANTS),
            "status": rng.choice(["published"] * 4 + ["draft", "withdrawn"]), "format": rng.choice(FORMATS),
            "price_eur": rng.choice([None, 0, 800, 1500, 1500.5, 4000]), "funding": {"qcg": rng.random() < 0.4},
            "visibility": {"scope": scope, "networks": rng.sample(TENANTS, rng.randint(0, 2)) if scope == "networks"
                           else []},
            "sessions": sessions}


def _demand(rng: random.Random) -> dict:
    start = date(2027, 1, 1) + timedelta(days=rng.randrange(150))
    return {"tenant": rng.choice(TENANTS), "formats": rng.sample(FORMATS, rng.randint(1, 3)),
            "start_from": start.isoformat(), "start_to": (start + timedelta(days=rng.choice([0, 30, 90]))).isoformat(),
            "max_distance_km": rng.choice([0, 25, 50, 100, 200]), "max_price_eur": rng.choice([None, 1500, 5000]),
            "funding_required": rng.random() < 0.3,
            "employer": {"lat": rng.uniform(50.5, 53.5), "lon": rng.uniform(7.0, 10.5)}}


def _facts(offers: list[dict]) -> dict:
    """The offers as ``offer_index_facts`` answers for their ids (sessions only while published; a
    place only where it counts for distance)."""
    columns: dict[str, list] = {k: [] for k in ("at", "published", "format", "price", "qcg", "tenant", "scope",
                                                "networks", "session_at", "starts", "lats", "lons", "cities")}
    for at, offer in enumerate(offers, 1):
        published = offer["status"] == "published"
        for key, value in (("at", at), ("published", published), ("format", offer["format"]),
                           ("price", offer["price_eur"]), ("qcg", offer["funding"]["qcg"]),
                           ("tenant", offer["tenant"]), ("scope", offer["visibility"]["scope"]),
                           ("networks", " ".join(offer["visibility"]["networks"]))):
            columns[key].append(value)
        located = offer["format"] in LOCATED_FORMATS
        for session in offer["sessions"] if published else ():
            place = session["location"] if located else None
            columns["session_at"].append(at)
            columns["starts"].append(date.fromisoformat(session["start"]).toordinal() - date(1970, 1, 1).toordinal())
            columns["lats"].append(place and place["lat"])
            columns["lons"].append(place and place["lon"])
            columns["cities"].append((session["location"] or {}).get("city"))
    return columns


def _indexed(offers: list[dict]) -> OfferIndex:
    index = OfferIndex()
    zero = np.zeros((len(offers), DIM), dtype=VECTOR_DTYPE)
    index._put_facts(index._put([o["id"] for o in offers], zero), _facts(offers))
    return index


def _as_found(feasible) -> dict[str, tuple]:
    out = {}
    for i in range(len(feasible)):
        session, km = feasible.session(i)
        out[feasible.offer_id(i)] = (session["start"], None if km is None else round(km, 6))
    return out


def _as_checked(offers: list[dict], demand: dict) -> dict[str, tuple]:
    out = {}
    for o in offers:
        judged = check(o, demand)
        if judged.ok:
            out[o["id"]] = (judged.session["start"],
                            None if judged.distance_km is None else round(judged.distance_km, 6))
    return out


def test_feasible_offers_from_the_index_are_those_domain_check_passes() -> None:
    rng = random.Random(11)
    offers = [_offer(rng, n) for n in range(3000)]
    index = _indexed(offers)
    sizes = []
    for _ in range(200):
        demand = _demand(rng)
        found = index.feasible(demand)
        assert _as_found(found) == _as_checked(offers, demand)
        assert found.keys.tolist() == [_order_key(found.offer_id(i)) for i in range(len(found))]
        sizes.append(len(found))
    assert sum(sizes) > 1000 and min(sizes) == 0  # the demands found offers, and some none


def test_changed_offers_replace_their_facts_and_sessions() -> None:
    rng = random.Random(12)
    offers = [_offer(rng, n) for n in range(2000)]
    index = _indexed(offers)
    index.compact_after = 500
    compacted = 0
    for round_ in range(6):  # enough replaced sessions to compact the session columns
        changed = rng.sample(offers, 1500)  # the others keep their facts
        for o in changed:
            o.update({k: v for k, v in _offer(rng, 0).items() if k not in ("id", "tenant")})
        before = index._sessions
        index._put_facts(index.rows([o["id"] for o in changed]), _facts(changed))
        compacted += index._sessions < before
        for _ in range(30):
            demand = _demand(rng)
            assert _as_found(index.feasible(demand)) == _as_checked(offers, demand), round_
    assert compacted
    assert index.stats()["sessions"] == sum(len(o["sessions"]) for o in offers if o["status"] == "published")


def test_an_offer_the_transaction_changed_counts_as_changed() -> None:
    rng = random.Random(13)
    offers = [_offer(rng, n) for n in range(1500)]
    index = _indexed(offers)
    for _ in range(100):
        demand = _demand(rng)
        changed = {**rng.choice(offers), **{k: v for k, v in _offer(rng, 0).items() if k != "id"}}
        new = _offer(rng, 0)  # one the index has never held
        for offer in (changed, new):
            expected = _as_checked([o for o in offers if o["id"] != offer["id"]] + [offer], demand)
            found = index.feasible(demand, changed=offer)
            assert _as_found(found) == expected
            assert (found.position(offer["id"]) is not None) == (offer["id"] in expected)


def test_the_first_load_reads_every_offers_facts_in_one_pass() -> None:
    """``offer_index_all_facts`` answers by offer and by session in no order, each with its offer's id,
    and may name offers the index does not hold yet (they come with the next read)."""
    rng = random.Random(14)
    offers = [_offer(rng, n) for n in range(2500)]
    later = _offer(rng, 0) | {"status": "published", "visibility": {"scope": "all", "networks": []}}
    columns = _facts([*offers, later])
    ids = [o["id"] for o in [*offers, later]]
    by_offer = list(range(len(ids)))
    rng.shuffle(by_offer)
    by_session = list(range(len(columns["session_at"])))
    rng.shuffle(by_session)
    session_n = [0] * len(by_session)
    for i in range(1, len(session_n)):  # each session's place among its offer's
        same = columns["session_at"][i] == columns["session_at"][i - 1]
        session_n[i] = session_n[i - 1] + 1 if same else 0
    answer = {"id": [ids[i] for i in by_offer],
              **{k: [columns[k][i] for i in by_offer] for k in
                 ("published", "format", "price", "qcg", "tenant", "scope", "networks")},
              "session_id": [ids[columns["session_at"][i] - 1] for i in by_session],
              "session_n": [session_n[i] for i in by_session],
              **{k: [columns[k][i] for i in by_session] for k in ("starts", "lats", "lons", "cities")}}
    index = OfferIndex()
    index._put([o["id"] for o in offers], np.zeros((len(offers), DIM), dtype=VECTOR_DTYPE))
    index._put_all_facts(answer)
    assert index.row(later["id"]) is None
    for _ in range(150):
        demand = _demand(rng)
        found = index.feasible(demand)
        assert _as_found(found) == _as_checked(offers, demand)
        assert np.all(np.diff(found.rows) > 0)  # in the index's memory order, which the codes are read in
    changed = rng.sample(offers, 800)  # then changed: their first sessions must give way to the new
    for o in changed:
        o.update({k: v for k, v in _offer(rng, 0).items() if k not in ("id", "tenant")})
    index._put_facts(index.rows([o["id"] for o in changed]), _facts(changed))
    for _ in range(50):
        demand = _demand(rng)
        assert _as_found(index.feasible(demand)) == _as_checked(offers, demand)


def test_offers_equal_in_meaning_rank_alike_whatever_order_the_index_holds_them_in() -> None:
    """Replicas hold offers in the order they read them; equal texts (one course in many towns) have
    equal vectors, so the meaning step ties, and ties go by the offers' ids on every replica."""
    rng = random.Random(15)
    offers = [_offer(rng, n) | {"status": "published", "visibility": {"scope": "all", "networks": []},
                                "price_eur": None, "funding": {"qcg": True}} for n in range(6000)]
    texts = _unit(np.random.default_rng(3).standard_normal((4, DIM)))
    stored = np.frombuffer(b"".join(to_bytes(texts[n % 4]) for n in range(len(offers))),
                           dtype=VECTOR_DTYPE).reshape(len(offers), DIM)

    def held(order: list[int]) -> OfferIndex:
        index = OfferIndex()
        rows = index._put([offers[i]["id"] for i in order], stored[order])
        index._put_facts(rows, _facts([offers[i] for i in order]))
        return index

    order = list(range(len(offers)))
    rng.shuffle(order)
    replicas = [held(list(range(len(offers)))), held(order)]
    demand = {"tenant": "ruhr", "formats": FORMATS, "start_from": "2027-01-01", "start_to": "2027-12-31",
              "max_distance_km": 200, "max_price_eur": None, "funding_required": False,
              "employer": {"lat": 52.0, "lon": 8.7}}
    for topic in range(4):
        plain = _unit(texts[topic] + 0.3 * _unit(np.random.default_rng(topic).standard_normal(DIM)))
        heads = []
        for index in replicas:
            found = index.feasible(demand)
            assert len(found) > SHORTLIST  # the codes' step, where ties meet the edges of pool and shortlist
            _, first = meaning_step(index, found.rows, plain, {}, np.array([], dtype=np.int64), found.keys)
            heads.append([found.offer_id(i) for i in best_by_meaning(first, STAGE_TWO, found.keys).tolist()])
        assert heads[0] == heads[1]
        # one text's offers all tie: the head is those of the lowest ids, in their order
        topic_of = {o["id"]: n % 4 for n, o in enumerate(offers)}
        assert {topic_of[o] for o in heads[0]} == {topic}
        keys = [_order_key(o) for o in heads[0]]
        tied = sorted(_order_key(found.offer_id(i)) for i in range(len(found))
                      if topic_of[found.offer_id(i)] == topic)
        assert keys == tied[:STAGE_TWO]
