"""`make chaos`: the full chaos run (every service and the Celery worker SIGKILLed in turn, the
broker away 20 s, PostgreSQL away 10 s, SMTP refusing 60 s, under a steady load of offers), then
the reconciliation; exits non-zero on any loss or duplicate. ``--short`` is the form `make test` runs."""

from __future__ import annotations

import argparse
import sys

from tests.chaos.harness import ChaosRun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    parser.add_argument("--rate", type=float, default=10.0, help="offers per second")
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args(argv)
    chaos = ChaosRun(rate=args.rate, short=args.short)
    print("starting the chaos stack …", flush=True)
    try:
        chaos.start()
        report = chaos.run()
    finally:
        chaos.stop()
    print(report.render(), flush=True)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
