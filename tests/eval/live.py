"""`make eval`: matching quality measured on the RUNNING services, through their public API only.

Loads a folder of the ``shared/eval`` layout (offers.jsonl, demands.jsonl, qrels.jsonl, checker.py):
each provider through ``POST /v1/providers`` and each offer through ``POST /v1/offers`` (published) in
the catalog, as the network's provider user; then each demand through ``POST /v1/demands`` in
matching, as the network's employer user. Once matching's read model holds every offer (the
demand's ranked offers, ``GET /v1/demands/{id}/offers``, list all of the set's feasible ones), it
closes those demands and opens them again (each now matched at once against every offer, as an
employer posting against a settled catalog); once the matches have settled, it reads
``GET /v1/demands/{id}/matches`` and prints

  * mean nDCG@10 of the matches (gain = grade, ideal from the feasible judged offers, as baseline.py),
  * the returned offers that break a hard constraint (matches and ranked offers, by the set's checker),
  * the share of announced matches graded relevant (grade >= 1),

and, for comparison, nDCG@10 of the ranked offers. Offers the platform holds besides the set (the
demo data of ``make up``) count as unjudged (gain 0) and are reported. Afterwards the run's demands
are closed and its offers withdrawn, so a second run starts clean.

    python -m tests.eval.live ../shared/eval/dev      (make eval EVAL=../shared/eval/dev)

Tokens come from the dev issuer (password grant, the dev users of deploy/local), as tests/platform.py
gets them. Ports are those of `make up` (BR_TEST_SLOT moves them as for the test stack).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt

from deploy.local.stack import StackConfig
from services.matching.evaluate_offline import EvalSet, load_set, ndcg_at_10, summarise

WAIT_SECONDS = 180


class NotRunning(Exception):
    pass


class Api:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._tokens: dict[str, str] = {}
        self.http = httpx.Client(timeout=60)

    def token(self, username: str) -> str:
        cached = self._tokens.get(username)
        if cached is None or jwt.decode(cached, options={"verify_signature": False})["exp"] < time.time() + 60:
            response = self.http.post(f"{self.config.issuer_url}/protocol/openid-connect/token", data={
                "grant_type": "password", "client_id": "bildungsraum-cli", "username": username,
                "password": "dev", "scope": "openid"})
            response.raise_for_status()
            self._tokens[username] = response.json()["access_token"]
        return self._tokens[username]

    def call(self, method: str, service: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        for attempt in range(5):
            response = self.http.request(method, self.config.url(service) + path, headers=headers, **kwargs)
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers.get("Retry-After", 1 + attempt)))
        return response

    def check_running(self) -> None:
        missing = []
        for name, url in (("catalog", self.config.url("catalog") + "/healthz"),
                          ("matching", self.config.url("matching") + "/healthz"),
                          ("dev issuer", self.config.issuer_url + "/.well-known/openid-configuration")):
            try:
                if self.http.get(url, timeout=5).status_code != 200:
                    missing.append(f"{name} ({url}) answers but is not healthy")
            except httpx.HTTPError:
                missing.append(f"{name} ({url}) does not answer")
        if missing:
            raise NotRunning("; ".join(missing))


def _fail(response: httpx.Response, what: str) -> None:
    if response.status_code >= 300:
        raise SystemExit(f"{what}: HTTP {response.status_code}: {response.text[:500]}")


def load_offers(api: Api, data: EvalSet, run: str) -> dict[str, str]:
    """Providers and offers into the catalog; returns the catalog id of each offer of the set."""
    providers: dict[tuple[str, str], str] = {}
    valid_until = (date.today() + timedelta(days=900)).isoformat()
    ids = {}
    for offer in data.offers:
        tenant, provider = offer["tenant"], offer["provider"]
        user = f"{tenant}-provider"
        key = (tenant, provider["id"])
        if key not in providers:
            response = api.call("POST", "catalog", "/v1/providers", user, json={
                "name": provider["name"], "emails": [provider["email"]], "external_id": f"{run}-{provider['id']}",
                "azav": {"certified": bool(provider.get("azav_certified")), "valid_until": valid_until}})
            _fail(response, f"provider {provider['id']}")
            providers[key] = response.json()["id"]
        body = {k: offer[k] for k in ("title", "description", "skills", "qualification", "format", "schedule",
                                      "hours", "price_eur", "funding", "sessions", "visibility", "language")
                if k in offer}
        body |= {"provider_id": providers[key], "external_id": f"{run}-{offer['id']}", "status": "published"}
        response = api.call("POST", "catalog", "/v1/offers", user, json=body)
        _fail(response, f"offer {offer['id']}")
        ids[offer["id"]] = response.json()["id"]
    return ids


def open_demands(api: Api, data: EvalSet) -> dict[str, str]:
    ids = {}
    for demand in data.demands:
        body = {k: demand[k] for k in ("employer", "title", "description", "skills", "participants", "start_from",
                                       "start_to", "formats", "schedules", "max_distance_km", "max_price_eur",
                                       "funding_required") if k in demand}
        response = api.call("POST", "matching", "/v1/demands", f"{demand['tenant']}-employer", json=body)
        _fail(response, f"demand {demand['id']}")
        ids[demand["id"]] = response.json()["id"]
    return ids


def close_demands(api: Api, data: EvalSet, demand_ids: dict[str, str]) -> None:
    for did, demand_id in demand_ids.items():
        tenant = next(d["tenant"] for d in data.demands if d["id"] == did)
        api.call("POST", "matching", f"/v1/demands/{demand_id}/close", f"{tenant}-employer")


def ranked_offers(api: Api, user: str, demand_id: str) -> list[str]:
    out, page = [], 1
    while True:
        response = api.call("GET", "matching", f"/v1/demands/{demand_id}/offers", user,
                            params={"page": page, "page_size": 100})
        _fail(response, "ranked offers")
        body = response.json()
        out += [item["offer_id"] for item in body["items"]]
        if page * body["page_size"] >= body["total"] or not body["items"]:
            return out
        page += 1


def matches(api: Api, user: str, demand_id: str) -> list[str]:
    response = api.call("GET", "matching", f"/v1/demands/{demand_id}/matches", user)
    _fail(response, "matches")
    return [item["offer_id"] for item in response.json()["items"]]


def settled_matches(api: Api, users: dict[str, str], demand_ids: dict[str, str]) -> dict[str, list[str]]:
    """Each demand's matches once they stop changing (read every 2 s, at most a minute)."""
    previous: dict[str, list[str]] | None = None
    for _ in range(30):
        found = {d: matches(api, users[d], demand_ids[d]) for d in demand_ids}
        if found == previous:
            break
        previous = found
        time.sleep(2)
    return found


def run(folder: Path, config: StackConfig | None = None, verbose: bool = False) -> int:
    api = Api(config or StackConfig())
    try:
        api.check_running()
    except NotRunning as exc:
        print(f"make eval: the services are not running ({exc}).\nStart them with `make up` in another "
              "terminal, then run `make eval` again.", file=sys.stderr)
        return 2
    data = load_set(folder)
    run_tag = f"eval-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    offer_ids: dict[str, str] = {}
    demand_ids: dict[str, str] = {}
    try:
        print(f"loading {len(data.offers)} offers of {folder} into the catalog …", flush=True)
        offer_ids = load_offers(api, data, run_tag)
        set_ids = {catalog_id: eval_id for eval_id, catalog_id in offer_ids.items()}
        print(f"opening {len(data.demands)} demands in matching …", flush=True)
        demand_ids = open_demands(api, data)
        users = {d["id"]: f"{d['tenant']}-employer" for d in data.demands}
        expected = {d["id"]: {offer_ids[o["id"]] for o in data.offers if data.feasible(o, d)} for d in data.demands}

        # matching learns of the offers from the catalog's events: wait until every demand's ranked
        # offers hold all of the set's feasible ones, then until the matches stop changing
        deadline = time.monotonic() + WAIT_SECONDS
        ranking: dict[str, list[str]] = {}
        while True:
            ranking = {d: ranked_offers(api, users[d], demand_ids[d]) for d in demand_ids}
            lagging = [d for d in demand_ids if not expected[d] <= set(ranking[d])]
            if not lagging or time.monotonic() > deadline:
                break
            time.sleep(2)
        if lagging:
            print(f"warning: after {WAIT_SECONDS} s matching still misses feasible offers of {lagging}",
                  file=sys.stderr)
        # The demands above were opened while matching was still learning of the offers, so their
        # matches grew offer by offer in arrival order: reported too, as a demand posted before its
        # offers fares. Then close them and open the same demands again, each matched at once against
        # every offer, as an employer posting against a settled catalog.
        arrived = settled_matches(api, users, demand_ids)
        to_set = lambda ids: [set_ids.get(o, f"other:{o}") for o in ids]  # noqa: E731
        early = summarise(data, {d: (to_set(arrived[d]), []) for d in demand_ids})
        close_demands(api, data, demand_ids)
        print("opening them again against the settled read model …", flush=True)
        demand_ids = open_demands(api, data)
        found = settled_matches(api, users, demand_ids)
        ranking = {d: ranked_offers(api, users[d], demand_ids[d]) for d in demand_ids}

        foreign = {o for d in demand_ids for o in found[d] + ranking[d] if o not in set_ids}
        # offers from outside the set get an id no judgement knows: gain 0, and no rule to check
        results = {d: (to_set(found[d]), [o for o in to_set(ranking[d]) if not o.startswith("other:")])
                   for d in demand_ids}
        figures = summarise(data, results)
        lines = [f"{folder}: through the running services (catalog {api.config.url('catalog')}, "
                 f"matching {api.config.url('matching')}), {time.monotonic() - started:.0f} s"]
        if verbose:
            for did, p in figures.per_demand.items():
                lines.append(f"  {did}  nDCG@10 matches {p['ndcg_matches']:.3f}  ranking {p['ndcg_ranking']:.3f}  "
                             f"announced {p['announced']}  relevant {p['relevant']}")
        with_foreign = sum(1 for d in demand_ids for o in found[d] if o not in set_ids)
        set_only = []
        for demand in data.demands:
            feasible = {o["id"] for o in data.offers if data.feasible(o, demand)}
            own = [o for o in results[demand["id"]][0] if not o.startswith("other:")]
            set_only.append(ndcg_at_10(demand["id"], own, data, feasible))
        lines += [
            f"mean nDCG@10 of the matches:              {figures.ndcg_matches:.3f}",
            f"returned offers breaking a hard rule:     {figures.violations}",
            f"announced matches graded relevant (>=1):  {figures.relevant}/{figures.announced}"
            f" = {100 * figures.relevant_share:.1f} %",
            f"mean nDCG@10 of the ranked offers:        {figures.ndcg_ranking:.3f}  (GET /v1/demands/{{id}}/offers)",
            f"demands opened while the offers arrived:  {early.relevant}/{early.announced} matches relevant"
            f" = {100 * early.relevant_share:.1f} %",
        ]
        if foreign:
            lines.append(f"offers from outside the set among them:   {len(foreign)} ({with_foreign} matches; "
                         f"counted as not relevant; without them nDCG@10 of the matches "
                         f"{sum(set_only) / len(set_only):.3f})")
        print("\n".join(lines))
        return 0
    finally:
        close_demands(api, data, demand_ids)
        for eval_id, catalog_id in offer_ids.items():
            tenant = next(o["tenant"] for o in data.offers if o["id"] == eval_id)
            api.call("POST", "catalog", f"/v1/offers/{catalog_id}/withdraw", f"{tenant}-provider")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of the shared/eval layout")
    parser.add_argument("--verbose", "-v", action="store_true", help="figures per demand")
    args = parser.parse_args(argv)
    if not (args.folder / "offers.jsonl").exists():
        print(f"{args.folder}: no offers.jsonl here (expected the shared/eval layout)", file=sys.stderr)
        return 2
    return run(args.folder, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
