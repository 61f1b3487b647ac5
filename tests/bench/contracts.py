"""The event contract check per event: the compiled validator the runtime uses (jsonschema-rs,
``runtime.events.validate``) against the pure-Python ``jsonschema`` it replaced, on 2,000 generated
OfferPublished payloads (tests/bench/catalog_data.py). ``python -m tests.bench.contracts``"""

from __future__ import annotations

import json
import time

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from contracts import OFFER_PUBLISHED
from runtime.events import CONTRACTS_DIR, Event, validate
from tests.bench.catalog_data import offer_rows
from tests.bench.matching import state_of


def main() -> None:
    events = [Event(OFFER_PUBLISHED, "catalog", o["tenant"], str(o["id"]), state_of(o))
              for o in offer_rows(2000, seed=3)]
    schemas = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(CONTRACTS_DIR.glob("*.json"))]
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    python = Draft202012Validator(next(s for s in schemas if s["$id"].endswith(f"/{OFFER_PUBLISHED}.json")),
                                  registry=registry, format_checker=FormatChecker())
    for name, check in (("jsonschema (pure Python)", lambda e: list(python.iter_errors(e.data))),
                        ("runtime.events.validate (jsonschema-rs)", validate)):
        check(events[0])
        started = time.perf_counter()
        for event in events:
            check(event)
        print(f"{name:42s} {(time.perf_counter() - started) / len(events) * 1e6:8.1f} µs per event")


if __name__ == "__main__":
    main()
