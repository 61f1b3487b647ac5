"""What reading an open-Qcat file costs per record, parsing alone (no database):
``.venv/bin/python -m tests.bench.openqcat_parse [--offers N] [--rounds R]``.

Writes the catalog benchmark's generated file of N offers (tests/bench/catalog.py, 1-3 dated sessions
each) into a temporary folder and reads it R times with ``services.catalog.openqcat.read``, as the
import's staging step does; prints the median time per record."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from services.catalog import openqcat
from tests.bench.catalog import write_openqcat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--offers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "openqcat.xml"
        write_openqcat(path, args.offers)
        per_record, records = [], 0
        for _ in range(args.rounds):
            started, records = time.perf_counter(), 0
            with path.open("rb") as stream:
                for _record in openqcat.read(stream):
                    records += 1
            per_record.append((time.perf_counter() - started) / records)
    print(f"{args.offers} offers, {records} records (the mode line included): "
          f"{statistics.median(per_record) * 1e6:.1f} µs a record, median of {args.rounds} reads "
          f"({min(per_record) * 1e6:.1f}–{max(per_record) * 1e6:.1f})")


if __name__ == "__main__":
    main()
