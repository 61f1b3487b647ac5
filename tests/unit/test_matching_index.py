"""The in-process offer index and the two-step meaning step of ranking: above SHORTLIST feasible
offers, every offer is scored on 8-bit codes first and only the best on their exact vectors; the
demand's best offers and its expanded vector must be those the exact step gives."""

from __future__ import annotations

import numpy as np

from services.matching import relevance
from services.matching.handlers import SHORTLIST, STAGE_TWO, meaning_step
from services.matching.index import DIM, VECTOR_DTYPE, OfferIndex, from_bytes, to_bytes


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


def _exact_step(index: OfferIndex, rows: np.ndarray, plain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    matrix = index.vectors_at(rows)
    expanded = from_bytes(to_bytes(relevance.expand_query(plain, matrix)))
    return expanded, matrix @ expanded


def test_codes_are_close_to_the_exact_cosines() -> None:
    index, ids, centres, rng = _catalogue(6000)
    rows = index.rows(ids)
    query = _unit(centres[3] + 0.05 * rng.standard_normal(DIM))
    exact = index.vectors_at(rows) @ query
    assert np.abs(index.approximate(rows, query) - exact).max() < 0.01


def test_the_two_steps_keep_the_exact_best_offers_and_expansion() -> None:
    index, ids, centres, rng = _catalogue(30_000)
    feasible = rng.choice(len(ids), 12_000, replace=False)  # a demand's feasible offers, in no order
    rows = index.rows([ids[i] for i in feasible])
    assert len(rows) > SHORTLIST  # else the codes are not used at all
    for topic in (0, 11, 29):
        plain = _unit(centres[topic] + 0.3 * _unit(rng.standard_normal(DIM)))
        assert float(relevance.expand_query(plain, index.vectors_at(rows)) @ plain) < 0.99  # it does expand
        expanded, first = meaning_step(index, rows, plain, {}, np.array([], dtype=np.int64))
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
    expanded, first = meaning_step(index, rows, plain, {position: new_vector}, np.array([position]))
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
    assert abs(index.approximate(index.rows([ids[2500]]), replaced[0])[0] - 1.0) < 0.01
