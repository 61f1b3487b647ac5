"""Keeping Python's cyclic garbage collector off what a service holds for its whole life.

A full collection visits every container the process holds: the imported libraries alone (some
85,000 objects) take about 30 ms, and matching's offer index about 145 ms more at a million offers.
Such a collection runs whenever enough objects have outlived younger collections, so from time to
time one request waited for it: the p99 of every service, not its median. ``settle`` collects once
and then freezes what is alive (``gc.freeze``): later collections skip it. Frozen objects are still
freed by reference counting when nothing holds them any more; only cycles among them stay.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect once, then hide every object alive now from later collections. Call when a process has
    loaded what it keeps (after start, after a large index is read). Answers how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
