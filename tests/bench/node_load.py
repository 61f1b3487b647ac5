"""HTTP load from Node (tests/bench/load.mjs): N keep-alive clients outside the servers' Python
processes, whose own CPU is counted and reported. Sixteen Python threads under one interpreter lock
added 15–70 ms to a portal page. Node's cost depends on the answers' size: about a tenth of a
millisecond for a portal page, 1.5–2.4 ms for a search's 20 offers with their descriptions; with
httpx's asyncio client instead, the catalog bench's figures were the same within the spread
between runs (BENCHMARKS)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

LOAD = Path(__file__).with_name("load.mjs")


def node_load(urls: list[str], concurrency: int, rounds: int, headers: dict[str, str] | None = None,
              placed: Callable[[], None] | None = None) -> tuple[list[dict], float]:
    """``concurrency`` clients × ``rounds`` requests, client n asking ``urls`` in turn from the n-th.
    Each answer as load.mjs writes it ({"url", "status", "ms", "timing", "unavailable"}), and the
    clients' own CPU per request in ms, start-up included. ``placed``: run first in the clients'
    process (their core or cgroup)."""
    job = {"urls": urls, "concurrency": concurrency, "rounds": rounds, "headers": headers or {}}
    done = subprocess.run(["node", str(LOAD)], input=json.dumps(job), capture_output=True, text=True,
                          check=True, preexec_fn=placed)
    clients = json.loads(done.stderr.strip().splitlines()[-1])
    return [json.loads(line) for line in done.stdout.splitlines()], clients["cpu_ms"] / clients["requests"]
