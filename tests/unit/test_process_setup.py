"""What a service process sets up for itself at start: matching keeps numpy's BLAS to one thread
beside the encoder's, and the heap a service loaded at start is hidden from later full collections."""

from __future__ import annotations

import gc

from threadpoolctl import threadpool_info

from runtime import heap
from services.matching.bootstrap import MatchingSettings, create_app


def test_matching_keeps_blas_to_one_thread() -> None:
    create_app(MatchingSettings())
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_what_is_alive_when_settled_is_left_out_of_later_collections() -> None:
    kept = [[n] for n in range(1000)]  # containers, as an index's are
    try:
        frozen = heap.settle()
        assert frozen >= len(kept)
        assert not any(obj is kept for obj in gc.get_objects())  # a collection no longer visits it
    finally:
        gc.unfreeze()
