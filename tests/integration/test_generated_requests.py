"""No request gets a 500, and every answer is what the service documents: schemathesis sends
generated valid and invalid requests, built from each service's own OpenAPI document, with a real
token of a role the operation lets through, and checks each response's status code, content type
and body against that document."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.platform import Platform

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Not only "no 5xx": every answer's status, content type and body must be the ones the service's
# own OpenAPI documents (errors as application/problem+json, runtime.http.PROBLEM_RESPONSES), and a
# request the schema forbids must not be served (2xx).
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "negative_data_rejection")
# Warnings that mean the run tested less than it seems: an operation that only ever got 401/403
# (missing_auth), a schema the generator could not honour, a filter or setting that matched nothing.
# Not these: missing_test_data and validation_mismatch (ids of things that do not exist, and rules no
# schema can state, such as a start date not in the past, answer 404/422 by design), rate_limited
# (imports, members and tenants have their own per-user limits, 429 as documented).
FAIL_ON = ["missing_auth", "missing_deserializer", "unsupported_regex", "unresolvable_reference",
           "unmatched_filter", "method_not_allowed", "dictionary_mismatch"]

# Each service's user, and the operations only another role may call (services/*/authz.py,
# services/matching/requests.py): run as that role, or they would only ever get a 403. Identity runs
# as a network admin: an operator must name a tenant (X-Tenant), which the generator makes up.
USERS = {
    "catalog": ("lueneburg-provider", {"lueneburg-admin": [
        "PUT /v1/providers/{provider_id}/members", "PUT /v1/sharing", "GET /v1/audit"]}),
    "matching": ("lueneburg-employer", {
        "lueneburg-provider": ["GET /v1/matched-demands"],
        "lueneburg-admin": ["GET /v1/insights/gaps"],
        "lueneburg-counselor": ["GET /v1/demand-requests", "GET /v1/demand-requests/{request_id}",
                                "POST /v1/demand-requests/{request_id}/open"]}),
    "identity": ("lueneburg-admin", {"operator": ["POST /v1/tenants"]}),
    "notifications": ("lueneburg-admin", {"lueneburg-employer": [
        "GET /v1/employer-alerts", "PUT /v1/employer-alerts", "DELETE /v1/employer-alerts"]}),
}

# schemathesis' own list of statuses that reject invalid data, and 413 (a body over the route's bound)
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
NOT_PAST_AUTH = {401, 403, 429}  # the token checks' answers (429: runtime.http._rate_limit)


def _config(platform: Platform, user: str, others: dict[str, list[str]]) -> str:
    """schemathesis.toml: the bearer token per operation, and which warnings fail the run. Tokens are
    minted for an hour: the issuer's last five minutes, a cached one maybe one, and a run takes longer."""
    def bearer(username: str) -> str:
        token = platform.mint(username, exp=int(time.time()) + 3600)
        return f"headers = {{ Authorization = {json.dumps('Bearer ' + token)} }}"

    lines = [bearer(user), "[warnings]", f"fail-on = {json.dumps(FAIL_ON)}",
             # a body over the route's bound is refused with 413 before it is read: a rejection too
             "[checks.negative_data_rejection]", f"expected-statuses = {json.dumps(REJECTIONS)}"]
    for username, operations in others.items():
        lines += ["[[operations]]", f"include-name = {json.dumps(operations)}", bearer(username)]
    return "\n".join(lines) + "\n"


def _statuses(events: Path) -> dict[str, set[int]]:
    """Every status code each operation answered, from the run's NDJSON events."""
    seen: dict[str, set[int]] = defaultdict(set)
    for line in events.read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
        for case_id, interaction in recorder.get("interactions", {}).items():
            case = recorder["cases"][case_id]["value"]
            if interaction.get("response"):
                seen[f"{case['method']} {case['path']}"].add(interaction["response"]["status_code"])
    return seen


@pytest.mark.parametrize("service", USERS)
def test_generated_requests_get_documented_answers(platform: Platform, service: str, tmp_path: Path) -> None:
    config, report, events = tmp_path / "schemathesis.toml", tmp_path / "report.json", tmp_path / "events.ndjson"
    config.write_text(_config(platform, *USERS[service]))
    schema_url = f"{platform.config.url(service)}/openapi.json"
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", schema_url, "--checks", CHECKS, "--mode", "all",
         "--max-examples", "40", "--seed", "20261121", "--no-color", "--report", "json,ndjson",
         "--report-json-path", str(report), "--report-ndjson-path", str(events)],
        capture_output=True, text=True, timeout=900,
    )
    output = result.stdout[-20000:]
    document = json.loads(report.read_text())
    failures = {(f["title"], op) for f in document["failures"] for op in f["operations"]}
    assert not failures, output
    assert not [(w, ops) for w, ops in document["warnings"].items() if w in FAIL_ON and ops], output
    assert result.returncode == 0 and not document["errors"], output

    # Each operation was answered at least once by more than the token checks, as missing_auth does
    # not insist on (it looks at shares). The request guard's 422 for unreadable JSON, before them,
    # counts too; missing_auth catches an operation refused (nearly) always.
    statuses = _statuses(events)
    paths = httpx.get(schema_url).json()["paths"]
    never = [f"{method.upper()} {path}" for path, item in paths.items() for method in item
             if not statuses.get(f"{method.upper()} {path}", set()) - NOT_PAST_AUTH]
    assert not never, f"only ever refused: {never}"
