"""What a service process sets up for itself at start: matching keeps numpy's BLAS to one thread
beside the encoder's and runs every encoding on the encoder's own thread, and the heap a service
loaded at start is hidden from later full collections."""

from __future__ import annotations

import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import threadpool_info

from runtime import heap
from services.matching.bootstrap import MatchingSettings, create_app
from services.matching.encoder import load_e5, usable_cpus


def test_matching_keeps_blas_to_one_thread() -> None:
    create_app(MatchingSettings())
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_every_encoding_runs_on_the_encoders_own_thread() -> None:
    """The engine's OpenMP team belongs to the thread that starts it: callers on many threads (the
    event loop's pool) must not each start one."""
    encoder = load_e5()
    engine = encoder._model
    ran_on: set[int] = set()
    real = engine.encode

    class Recording:
        def __getattr__(self, name):
            return getattr(engine, name)

        def encode(self, texts, is_query):
            ran_on.add(threading.get_ident())
            return real(texts, is_query)

    encoder._model = Recording()
    try:
        with ThreadPoolExecutor(4) as callers:
            vectors = list(callers.map(lambda n: encoder.encode([f"Gabelstapler Kurs {n}"], "query"), range(12)))
    finally:
        encoder._model = engine
    assert len(ran_on) == 1 and threading.get_ident() not in ran_on
    assert all(v.shape == (1, 384) for v in vectors)


def test_what_is_alive_when_settled_is_left_out_of_later_collections() -> None:
    kept = [[n] for n in range(1000)]  # containers, as an index's are
    try:
        frozen = heap.settle()
        assert frozen >= len(kept)
        assert not any(obj is kept for obj in gc.get_objects())  # a collection no longer visits it
    finally:
        gc.unfreeze()


def test_the_encoder_takes_as_many_threads_as_the_container_has_cpus(tmp_path) -> None:
    cpu_max = tmp_path / "cpu.max"
    mine = len(os.sched_getaffinity(0))
    cpu_max.write_text("max 100000\n")  # no quota: the CPUs the process may run on
    assert usable_cpus(cpu_max) == mine
    cpu_max.write_text("100000 100000\n")  # a pod's limit of one CPU, on any node
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text("1600000 100000\n")  # a quota above the CPUs there are
    assert usable_cpus(cpu_max) == mine
    assert usable_cpus(tmp_path / "missing") == mine  # no cgroup v2 here
